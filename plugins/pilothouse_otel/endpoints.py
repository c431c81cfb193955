"""Where each signal goes, from the standard OTLP variables."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit


def endpoint(signal: str) -> str | None:
    """The URL ``signal`` (``traces``, ``metrics``) is sent to: its own variable
    (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``...), else the common one plus ``/v1/<signal>``;
    None when neither is set."""
    specific = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if specific:
        return specific
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return f"{base.rstrip('/')}/v1/{signal}" if base else None


def shown(url: str) -> str:
    """``url`` without a user, password or query, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
