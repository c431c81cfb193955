"""Bundled audit data: the attribute sets of bias probes and the adversarial payloads.

Registered through the same hooks a third-party plugin uses to add its own
(``register_attribute_sets``, ``register_payloads``). Both files are data,
written for pilothouse.
"""

from __future__ import annotations

from importlib.resources import files

from pilothouse import hookimpl, load_attribute_sets, load_payloads

HERE = files(__name__)


@hookimpl
def register_attribute_sets(register):
    """Register gender, ethnicity, age and origin."""
    for attribute_set in load_attribute_sets(HERE.joinpath("attributes.toml")):
        register(attribute_set)


@hookimpl
def register_payloads(register):
    """Register the bundled prompt-injection, jailbreak, exfiltration and tool-misuse payloads."""
    for payload in load_payloads(HERE.joinpath("payloads.toml")):
        register(payload)
