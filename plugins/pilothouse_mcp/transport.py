"""The HTTP client of a streamable-HTTP server's session (the SDK's own, on httpx2)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any


@contextlib.asynccontextmanager
async def http_client(
    headers: dict[str, str], timeout_s: float, expired: Callable[[], None]
) -> AsyncIterator[Any]:
    """An HTTP client with the server's headers, closed on leaving. ``expired`` is
    called when the server answers 404 to a request in a session: the protocol's way
    of saying the session is gone (a restart) and the request was not handled."""
    import httpx2
    from mcp.client.streamable_http import MCP_SESSION_ID, create_mcp_http_client

    async def heard(response: Any) -> None:
        if response.status_code == 404 and MCP_SESSION_ID in response.request.headers:
            expired()

    timeout = httpx2.Timeout(timeout_s, read=timeout_s + 5)
    client = create_mcp_http_client(headers=headers or None, timeout=timeout)
    client.event_hooks["response"].append(heard)
    async with client:
        yield client
