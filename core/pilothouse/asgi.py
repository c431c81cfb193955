"""What pilothouse's own servers put in front of an ASGI app they serve (crews over
MCP or A2A): a bearer token, checked in constant time."""

from __future__ import annotations

import hmac
from typing import Any


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
