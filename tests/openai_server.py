"""An OpenAI-compatible chat-completions server for tests and benchmarks, on 127.0.0.1.

A raw ASGI app under uvicorn, in a background thread. Tests script what it
answers (``enqueue``: replies, tool calls, HTTP errors, garbage, cut streams,
slow answers) and read back every request it received and the connections it
came on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@dataclass
class Answer:
    """One scripted answer. ``kind``: reply, status, garbage, cut, no_choices."""

    kind: str = "reply"
    text: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    delay: float = 0.0
    usage: bool = True
    #: seconds a stream is held open after ``[DONE]`` before its body ends
    linger: float = 0.0
    #: seconds between a stream's chunks
    pace: float = 0.0
    #: the finish reason sent (default: stop, or tool_calls)
    finish: str | None = None


def reply(text: str, **kw: Any) -> Answer:
    return Answer(text=text, **kw)


def tool_calls(*calls: tuple[str, dict[str, Any]], **kw: Any) -> Answer:
    return Answer(tool_calls=list(calls), **kw)


def status(code: int, body: str = "", **kw: Any) -> Answer:
    return Answer(
        kind="status",
        status=code,
        body=body or json.dumps({"error": {"message": f"scripted {code}", "type": "test"}}),
        **kw,
    )


#: what llama.cpp's Python server answers a json_schema response format with (HTTP 500)
LLAMA_CPP_FORMAT_ERROR = (
    "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input"
    " should be 'text' or 'json_object'\", 'input': 'json_schema'}]"
)


@dataclass
class Quirks:
    """How a kind of server departs from OpenAI's protocol: what it refuses before any
    scripted answer is taken (the refused request is still in ``received``)."""

    #: response_format type -> the status a request asking for it is refused with
    #: (500: llama.cpp's Python server; 400: a gateway that knows no structured output)
    refuse_format: dict[str, int] = field(default_factory=dict)
    #: a request with ``tools`` is refused with this status (a chat format without tools)
    refuse_tools: int | None = None


class FakeOpenAI:
    """The app. ``received`` holds each request body, ``stamps`` when it arrived."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.script: deque[Answer] = deque()
        self.quirks = Quirks()
        self.by_model: dict[str, Answer] = {}
        #: when set, answers every request the script and by_model leave (by its content)
        self.responder: Callable[[dict[str, Any]], Answer] | None = None
        self.received: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        #: the W3C traceparent header of every request (None when it had none)
        self.traceparents: list[str | None] = []
        self.stamps: list[float] = []
        self.latency = 0.0
        #: hold the requests this says yes to until ``release()`` (a test's way to stop
        #: a fleet mid-work, whatever the machine's speed)
        self.hold: Callable[[dict[str, Any]], bool] | None = None
        self.released = threading.Event()
        #: requests being held
        self.holding = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.disconnected = 0
        self.counter = 0
        #: the (host, port) of every client connection a request came on
        self.connections: set[tuple[str, int]] = set()
        #: the path and query of every request
        self.targets: list[str] = []

    def release(self) -> None:
        """Answer the held requests and every later one."""
        self.released.set()

    def enqueue(self, *answers: Answer) -> None:
        self.script.extend(answers)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
            await _send(send, 404, b'{"error": {"message": "no such route"}}')
            return
        request = json.loads(body)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.received.append(request)
        self.auth.append(headers.get("authorization"))
        self.traceparents.append(headers.get("traceparent"))
        self.stamps.append(time.monotonic())
        self.connections.add(tuple(scope["client"]))
        self.targets.append(f"{scope['path']}?{scope['query_string'].decode()}".rstrip("?"))
        self.counter += 1
        if self.hold is not None and self.hold(request):
            self.holding += 1
            try:
                while not self.released.is_set():
                    await asyncio.sleep(0.01)
            finally:
                self.holding -= 1
        answer = (
            self._refusal(request)
            or self.by_model.get(request.get("model"))
            or (
                self.script.popleft()
                if self.script
                else self.responder(request)
                if self.responder
                else Answer(text=_echo(request))
            )
        )
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if not await _wait_or_disconnect(receive, self.latency + answer.delay):
                self.disconnected += 1
                return
            await self._answer(request, answer, send, receive)
        finally:
            self.in_flight -= 1

    def _refusal(self, request: dict[str, Any]) -> Answer | None:
        """The error the server's quirks answer ``request`` with, if any."""
        kind = (request.get("response_format") or {}).get("type")
        code = self.quirks.refuse_format.get(kind or "")
        if code is not None:
            message = (
                LLAMA_CPP_FORMAT_ERROR
                if code >= 500
                else f"response_format of type {kind!r} is not supported"
            )
            error = {"message": message, "type": "invalid_request_error"}
            return status(code, body=json.dumps({"error": error}))
        if request.get("tools") and self.quirks.refuse_tools is not None:
            message = "tools are not supported with chat format 'gemma'"
            return status(
                self.quirks.refuse_tools, body=json.dumps({"error": {"message": message}})
            )
        return None

    async def _answer(
        self, request: dict[str, Any], answer: Answer, send: Any, receive: Any
    ) -> None:
        request_id = f"req-{self.counter}"
        extra = {"x-request-id": request_id, **answer.headers}
        if answer.kind == "status":
            await _send(send, answer.status, answer.body.encode(), extra)
            return
        if answer.kind == "garbage":
            await _send(send, 200, b'{"id": "oops", "choices": [', extra)
            return
        if answer.kind == "no_choices":
            await _send(send, 200, json.dumps({"id": request_id, "choices": []}).encode(), extra)
            return
        usage = _usage(request, answer) if answer.usage else None
        if request.get("stream"):
            await self._stream(request, answer, send, receive, request_id, usage, extra)
            return
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        if answer.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for i, (name, args) in enumerate(answer.tool_calls)
            ]
        data = {
            "id": request_id,
            "object": "chat.completion",
            "model": request.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": answer.finish
                    or ("tool_calls" if answer.tool_calls else "stop"),
                }
            ],
        }
        if usage:
            data["usage"] = usage
        await _send(send, 200, json.dumps(data).encode(), extra)

    async def _stream(self, request, answer, send, receive, request_id, usage, extra) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": _headers({"content-type": "text/event-stream", **extra}),
            }
        )

        async def chunk(payload: dict[str, Any] | str) -> None:
            if answer.pace:
                await asyncio.sleep(answer.pace)
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await send(
                {
                    "type": "http.response.body",
                    "body": f"data: {data}\n\n".encode(),
                    "more_body": True,
                }
            )

        base = {"id": request_id, "object": "chat.completion.chunk", "model": request.get("model")}
        await chunk({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        words = (answer.text or "").split(" ")
        if answer.kind == "cut":
            words = words[: max(1, len(words) // 2)]
        for i, word in enumerate(w for w in words if answer.text):
            piece = word if i == 0 else " " + word
            await chunk({**base, "choices": [{"index": 0, "delta": {"content": piece}}]})
        if answer.kind == "cut":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        for i, (name, args) in enumerate(answer.tool_calls):
            raw = json.dumps(args)
            half = len(raw) // 2
            await chunk(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {
                                        "index": i,
                                        "id": f"call_{i}",
                                        "type": "function",
                                        "function": {"name": name, "arguments": raw[:half]},
                                    }
                                ]
                            },
                        }
                    ],
                }
            )
            await chunk(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [{"index": i, "function": {"arguments": raw[half:]}}]
                            },
                        }
                    ],
                }
            )
        finish = answer.finish or ("tool_calls" if answer.tool_calls else "stop")
        await chunk({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if usage and (request.get("stream_options") or {}).get("include_usage"):
            await chunk({**base, "choices": [], "usage": usage})
        await chunk("[DONE]")
        if answer.linger and not await _wait_or_disconnect(receive, answer.linger):
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def read_body(receive: Any) -> bytes:
    """The whole body of an ASGI request."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def _echo(request: dict[str, Any]) -> str:
    last = request["messages"][-1].get("content") or ""
    return "echo: " + " ".join(last.split())[:60]


def _usage(request: dict[str, Any], answer: Answer) -> dict[str, int]:
    prompt = sum(len(m.get("content") or "") for m in request["messages"]) // 4 + 1
    completion = len(answer.text or "") // 4 + 1 + 5 * len(answer.tool_calls)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


async def _wait_or_disconnect(receive: Any, seconds: float) -> bool:
    """Sleep ``seconds`` unless the client goes away first (then False)."""
    if seconds <= 0:
        return True
    waiter = asyncio.ensure_future(receive())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=seconds)
        return not (done and waiter.result().get("type") == "http.disconnect")
    finally:
        waiter.cancel()


def _headers(values: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in values.items()]


async def _send(send: Any, code: int, body: bytes, extra: dict[str, str] | None = None) -> None:
    headers = _headers({"content-type": "application/json", **(extra or {})})
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def serve(app: FakeOpenAI) -> Iterator[str]:
    """Run ``app`` on a free port of 127.0.0.1; yield its base URL (ending in /v1)."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say
    # so, and without it every reply waits ~40 ms on Nagle and delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        ws="none",
        http="h11",
        access_log=False,
        backlog=2048,
        limit_concurrency=None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
