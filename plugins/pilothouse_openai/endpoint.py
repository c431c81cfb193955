"""One OpenAI-compatible server: its pooled HTTP client, limits, retries and errors."""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2 as httpx

from pilothouse import Endpoint, ModelError, traceparent

from .ratelimit import Bucket

log = logging.getLogger("pilothouse.openai")

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
#: connections per pool: an httpx pool looks at every one of its connections for
#: each request it assigns (and probes each idle one's socket), so one big pool
#: costs more CPU per request the larger it is; the endpoint's connections are
#: split over pools of this size instead, and the slot a request takes names its
#: pool (4 per pool: ~30% less client CPU than 32; 1 and 4 measure the same
#: within this machine's noise)
POOL_SIZE = 4


class EndpointRejected(ModelError):
    """The server refused the request (a status that retrying will not change), with
    its status and its own words, which decide what the provider tries next."""

    def __init__(
        self, message: str, *, status: int, detail: str, request_id: str | None = None
    ) -> None:
        super().__init__(message, request_id=request_id)
        #: the message without the request id (for an error that adds to it)
        self.explanation = message
        self.status = status
        #: the server's message (redacted): its ``error.message``, or the body's start
        self.detail = detail


@dataclass
class Sent:
    """A response with status 200 (its body not yet read when streaming), and the
    time its request spent waiting for the endpoint's limits."""

    response: httpx.Response
    #: seconds spent waiting for a slot and the rate limits, over every attempt
    queued_s: float
    #: ``time.perf_counter()`` when the request that got this response was sent
    sent_at: float


class EndpointClient:
    """Shared by every model of one endpoint: connection pools holding as many
    connections as the endpoint's concurrency limit, the rate limits, and the
    retry policy."""

    def __init__(
        self, name: str, config: Endpoint, *, sleep: Callable[[float], Awaitable[Any]] = anyio.sleep
    ) -> None:
        self.name = name
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        #: the URL as messages show it (no password, no secret query values)
        self.shown_url = config.shown_url().rstrip("/")
        self._secrets = config.secrets()
        self._key = config.key()
        self._pools: list[httpx.AsyncClient] = []
        # the path goes before any query the base URL carries (?api-version=... on Azure)
        base = httpx.URL(self.base_url)
        self._url = base.copy_with(path=base.path.rstrip("/") + "/chat/completions")
        headers = {
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "Content-Type": "application/json",
            "User-Agent": "pilothouse",
            **config.headers,
        }
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        #: every request's headers, made once (a client's build_request merges its
        #: defaults, cookies and base URL anew for each request: most of its cost)
        self._headers = httpx.Headers(headers)
        #: one entry per connection not in use, naming its pool
        self._free: deque[int] = deque()
        self._slots: anyio.CapacityLimiter | None = None
        self._requests = Bucket(config.requests_per_minute) if config.requests_per_minute else None
        self._tokens = Bucket(config.tokens_per_minute) if config.tokens_per_minute else None
        self._sleep = sleep

    def pools(self) -> list[httpx.AsyncClient]:
        """The pooled clients, made on first use inside the event loop: together
        they hold ``max_concurrency`` connections, at most :data:`POOL_SIZE` each."""
        if not self._pools:
            total = self.config.max_concurrency
            tls = httpx.create_ssl_context()  # loading the CA bundle once, not per pool
            timeout = httpx.Timeout(self.config.timeout_s, connect=min(10.0, self.config.timeout_s))
            for i in range(math.ceil(total / POOL_SIZE)):
                size = min(POOL_SIZE, total - i * POOL_SIZE)
                limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
                self._pools.append(httpx.AsyncClient(limits=limits, timeout=timeout, verify=tls))
                self._free.extend([i] * size)
            self._slots = anyio.CapacityLimiter(total)
        return self._pools

    async def aclose(self) -> None:
        """Close the connection pools."""
        pools, self._pools = self._pools, []
        self._free.clear()
        for client in pools:
            await client.aclose()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[httpx.AsyncClient]:
        """A slot under the concurrency limit, and the pool its request goes through."""
        pools = self.pools()
        assert self._slots is not None
        async with self._slots:
            # the limit holds as many slots as the pools hold connections: one is free
            index = self._free.pop()
            try:
                yield pools[index]
            finally:
                self._free.append(index)

    def redact(self, text: str) -> str:
        """Text from a server or an exception, with every secret of the endpoint cut out
        (the key, a password or key in the URL, secret header values)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @asynccontextmanager
    async def post(
        self, payload: dict[str, Any], *, tokens: int, stream: bool
    ) -> AsyncIterator[Sent]:
        """POST ``/chat/completions`` within the limits, retrying what is worth retrying.

        Yields the :class:`Sent` response with status 200; raises :class:`ModelError`
        saying what to fix otherwise.
        """
        self.pools()  # made on the first request: not time spent waiting for the limits
        attempt = 0
        queued = 0.0
        while True:
            waiting = time.perf_counter()
            if self._requests is not None:
                await self._requests.take(1)
            if self._tokens is not None:
                await self._tokens.take(tokens)
            retry_after: float | None = None
            async with self._connection() as client:
                sent_at = time.perf_counter()
                queued += sent_at - waiting
                try:
                    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
                    headers = self._headers
                    parent = traceparent()  # the model call's span, when a run is traced
                    if parent is not None:
                        headers = httpx.Headers({**headers, "traceparent": parent})
                    request = httpx.Request("POST", self._url, headers=headers,
                                            content=body.encode())  # fmt: skip
                    response = await client.send(request, stream=stream)
                except httpx.TransportError as exc:
                    problem = f"{type(exc).__name__}: {self.redact(str(exc)) or 'no detail'}"
                    response = None
                if response is not None:
                    if response.status_code == 200:
                        try:
                            yield Sent(response, queued, sent_at)
                        finally:
                            await response.aclose()
                        return
                    body = (await response.aread()).decode("utf-8", "replace")
                    await response.aclose()
                    code = response.status_code
                    detail = self.redact(_server_message(body))
                    if code not in RETRY_STATUSES or (code >= 500 and _malformed(detail)):
                        raise EndpointRejected(
                            self._explain(code, detail, payload),
                            status=code,
                            detail=detail,
                            request_id=response.headers.get("x-request-id"),
                        )
                    problem = f"HTTP {code}" + (f"; the server said: {detail}" if detail else "")
                    retry_after = _retry_after(response.headers.get("retry-after"))
            if attempt >= self.config.max_retries:
                raise ModelError(
                    f"endpoint {self.name!r} ({self.shown_url}) failed after"
                    f" {attempt + 1} attempts: {problem}"
                )
            delay = retry_after if retry_after is not None else _backoff(attempt)
            log.warning(
                "endpoint %s: %s; retry %d in %.2f s", self.name, problem, attempt + 1, delay
            )
            attempt += 1
            await self._sleep(delay)

    def _parameter_hint(self, detail: str, payload: dict[str, Any]) -> str:
        """What to change when the server refused the field the token limit was sent
        in, or the temperature (reasoning models take only their own)."""
        if "temperature" in payload and "temperature" in detail and "unsupported" in detail.lower():
            return "; this model takes no temperature: drop it from the persona"
        sent = next((field for field in _OTHER_FIELD if field in payload), None)
        if sent is None or not _refuses(detail, sent):
            return ""
        return f'; set endpoints.{self.name}.max_tokens_field = "{_OTHER_FIELD[sent]}"'

    def _explain(self, status: int, detail: str, payload: dict[str, Any]) -> str:
        model = payload.get("model")
        where = f"endpoint {self.name!r} ({self.shown_url})"
        if status == 401:
            hint = (
                "set OPENAI_API_KEY"
                if self.name == "openai"
                else f"set endpoints.{self.name}.api_key"
            )
            text = f"{where} rejected the API key (HTTP 401): {hint}"
        elif status == 403:
            text = (
                f"{where} refused access to model {model!r} (HTTP 403): check the key's permissions"
            )
        elif status == 404:
            text = (
                f"{where} has no model {model!r} or no /chat/completions (HTTP 404):"
                " check the model name and the base URL"
            )
        elif status >= 500:
            text = f"{where} rejected the request as malformed (HTTP {status}, not retried)"
        else:
            text = f"{where} rejected the request (HTTP {status})"
        if detail:
            text += f"; the server said: {detail}"
        if status == 400:
            text += self._parameter_hint(detail, payload)
        return self.redact(text)


_OTHER_FIELD = {"max_tokens": "max_completion_tokens", "max_completion_tokens": "max_tokens"}


def _refuses(detail: str, field: str) -> bool:
    """Whether a server's 400 message refuses the request field ``field`` itself (not its
    value: "max_tokens is too large" asks for a smaller number, not another field)."""
    low = detail.lower()
    return field in detail and (
        _OTHER_FIELD[field] in detail
        or any(word in low for word in ("unsupported", "unrecognized", "not permitted"))
    )


#: what a server error says when the request itself is wrong, not the server for now
#: (a 5xx that retrying cannot change: llama.cpp's Python server answers its
#: request validation errors with HTTP 500)
_MALFORMED = (
    "validation error", "input should be", "field required", "extra inputs are not permitted",
    "unprocessable", "not supported", "unsupported", "response_format", "json_schema",
)  # fmt: skip


def _malformed(detail: str) -> bool:
    """Whether a server error's message says the request is malformed."""
    low = detail.lower()
    return any(sign in low for sign in _MALFORMED)


def _server_message(body: str) -> str:
    try:
        data = json.loads(body)
        message = (data.get("error") or {}).get("message") if isinstance(data, dict) else None
    except (json.JSONDecodeError, AttributeError):
        message = None
    text = message or body
    return " ".join(text.split())[:300]


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), at most 60."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(seconds, 60.0))


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter between half and all of the step."""
    step = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
    return step * (0.5 + random.random() / 2)
