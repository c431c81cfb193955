"""The HTTP client of a streamable-HTTP server's session (the SDK's own, on httpx2)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any


@contextlib.asynccontextmanager
async def http_client(headers: dict[str, str], timeout_s: float) -> AsyncIterator[Any]:
    """An HTTP client with the server's headers, closed on leaving."""
    import httpx2
    from mcp.client.streamable_http import create_mcp_http_client

    timeout = httpx2.Timeout(timeout_s, read=timeout_s + 5)
    client = create_mcp_http_client(headers=headers or None, timeout=timeout)
    async with client:
        yield client
