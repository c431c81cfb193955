"""OpenTelemetry export: every run's trace (GenAI semantic conventions) to the team's own
backend (Jaeger, Grafana Tempo, Honeycomb, Datadog, Langfuse, Phoenix...).

Configured the standard way: on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and the ``otel`` extra is installed;
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
as everywhere; prompts and replies only with
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``, redacted as the portal
redacts. ``export = "off"`` in ``[plugins.otel]`` (``PILOTHOUSE_PLUGINS__OTEL__EXPORT=off``)
turns it off.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel

from pilothouse import Redactor, hookimpl

log = logging.getLogger("pilothouse.otel")


class OtelSettings(BaseModel):
    """``[plugins.otel]``: whether runs are exported."""

    model_config = {"extra": "forbid"}

    #: ``auto`` sends every run's trace and metrics wherever
    #: ``OTEL_EXPORTER_OTLP_ENDPOINT`` says; ``off`` sends nothing
    export: Literal["auto", "off"] = "auto"


@hookimpl
def register_settings(register):
    """The exporter's section, ``[plugins.otel]``."""
    register("otel", OtelSettings)


@hookimpl
def register_observers(register, settings):
    """The exporter, when an endpoint is configured and the setting does not say off."""
    if settings.section("otel").export == "off":
        return
    try:
        from .endpoints import endpoint
        from .exporter import OtelExporter, content_captured
    except ImportError as exc:  # the extra is not installed
        import os

        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            log.warning("otel: OTEL_EXPORTER_OTLP_ENDPOINT is set but the exporter is not"
                        " installed (%s): pip install 'pilothouse[otel]'", exc)  # fmt: skip
        return
    traces = endpoint("traces")
    if traces:
        register(OtelExporter(traces, content=content_captured(),
                              redact=Redactor.from_settings(settings)))  # fmt: skip
