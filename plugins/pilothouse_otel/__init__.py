"""OpenTelemetry export: every run's trace (GenAI semantic conventions) to the team's own
backend (Jaeger, Grafana Tempo, Honeycomb, Datadog, Langfuse, Phoenix...).

Configured the standard way: on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and the ``otel`` extra is installed;
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
as everywhere; prompts and replies only with
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``, redacted as the portal
redacts. The setting ``otel = "off"`` (``PILOTHOUSE_OTEL=off``) turns it off.
"""

from __future__ import annotations

import logging

from pilothouse import Redactor, hookimpl

log = logging.getLogger("pilothouse.otel")


@hookimpl
def register_observers(register, settings):
    """The exporter, when an endpoint is configured and the setting does not say off."""
    if settings.otel == "off":
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
