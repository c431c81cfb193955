"""The OpenAI-compatible model provider: OpenAI, vLLM, Ollama, llama.cpp server, LM Studio...

Every endpoint is a provider whose name is the prefix of its model ids:

- ``openai``: ``OPENAI_BASE_URL`` (default https://api.openai.com/v1) and
  ``OPENAI_API_KEY``, the ecosystem's conventions;
- each ``[endpoints.NAME]`` table of pilothouse.toml (or
  ``PILOTHOUSE_ENDPOINTS__NAME__BASE_URL=...``), e.g. a local vLLM as ``local``.

A persona then names ``openai:gpt-4o-mini`` or ``local:llama3``.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from pilothouse import ConfigError, Endpoint, Model, ModelProvider, Settings, hookimpl

from .chat import OpenAIChatModel
from .endpoint import EndpointClient
from .pricing import price_for


class OpenAIProvider(ModelProvider):
    """The models of one OpenAI-compatible endpoint."""

    def __init__(self, name: str, config: Endpoint, settings: Settings) -> None:
        self.name = name
        self.config = config
        self.settings = settings
        self.client = EndpointClient(name, config)

    def model(self, name: str) -> Model:
        """Any model name: the server decides whether it exists (HTTP 404 says so).

        An endpoint that surely needs a key and has none is refused here, before a
        run starts, rather than by five failed attempts at the server.
        """
        missing = missing_key(self.name, self.config)
        if missing:
            raise ConfigError(missing)
        return OpenAIChatModel(self.client, name, price_for(self.settings, self.name, name))

    def default_model(self) -> str | None:
        """The endpoint's ``default_model``, if set."""
        return self.config.default_model

    async def aclose(self) -> None:
        """Close the endpoint's connection pool."""
        await self.client.aclose()


def endpoints(settings: Settings) -> dict[str, Endpoint]:
    """The configured endpoints plus ``openai`` from the OPENAI_* environment variables."""
    found = {name: e for name, e in settings.endpoints.items() if e.provider == "openai"}
    if "openai" not in found:
        found["openai"] = Endpoint(
            base_url=os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
            api_key_env="OPENAI_API_KEY",
        )
    return found


def missing_key(name: str, config: Endpoint) -> str | None:
    """Why ``config`` cannot work without a key it lacks, or None.

    A key is surely needed when the endpoint names the variable to read it from
    (a local server needs no ``api_key_env``), and by OpenAI's own API. The
    implicit ``openai`` endpoint names ``OPENAI_API_KEY`` for every base URL, so
    for it only the hosted API counts: a local server behind ``OPENAI_BASE_URL``
    may need no key.
    """
    if config.key():
        return None
    hosted = urlsplit(config.base_url).hostname == "api.openai.com"
    if name == "openai" and config.api_key is None and not hosted:
        return None
    if config.api_key_env or hosted:
        variable = config.api_key_env or "the variable named by api_key_env"
        return f"endpoint {name!r} ({config.shown_url()}) needs an API key: set {variable}" + (
            "" if name == "openai" else f" (or endpoints.{name}.api_key)"
        )
    return None


@hookimpl
def register_models(register, settings):
    """One provider per OpenAI-compatible endpoint."""
    for name, config in endpoints(settings).items():
        register(OpenAIProvider(name, config, settings))
