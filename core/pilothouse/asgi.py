"""What pilothouse's own servers put in front of an ASGI app they serve (crews over
MCP or A2A): a bearer token, checked in constant time, required off loopback."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from .errors import ConfigError


def loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_off_loopback(host: str, token: str | None, section: str) -> None:
    """Refuse to serve on an address other machines reach without a token; ``section``
    is the settings section that holds it (``mcp.serve``)."""
    if token is None and not loopback(host):
        variable = "PILOTHOUSE_PLUGINS__" + section.upper().replace(".", "__") + "__TOKEN"
        raise ConfigError(
            f"{section.split('.')[0]} serve: {host} is reachable from other machines; set"
            f" [plugins.{section}] token (or {variable}) so that clients must send it, or"
            " serve on 127.0.0.1"
        )


def bearer_only(app: Any, token: str) -> Any:
    """``app``, answering 401 to any HTTP request without ``Authorization: Bearer TOKEN``
    (the lifespan and other scopes pass through)."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b'Bearer realm="pilothouse"'),
                        ],
                    }
                )
                await send({"type": "http.response.body",
                            "body": b'{"error": "a bearer token is required"}'})  # fmt: skip
                return
        await app(scope, receive, send)

    return guarded
