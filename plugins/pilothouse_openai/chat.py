"""A chat model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pilothouse import (
    OUTPUT_MODES,
    Message,
    Model,
    ModelError,
    ModelRequest,
    ModelResponse,
    ToolCall,
    Usage,
    emit_delta,
    estimate_request_tokens,
    estimate_tokens,
    output_problem,
)

from . import output
from .endpoint import EndpointClient, EndpointRejected, Sent
from .shapes import arguments_text, content_text, tool_call_in_text
from .sse import StreamedReply, read_stream

log = logging.getLogger("pilothouse.openai")

#: what makes a server take tool calls, for the error that says it does not
TOOLS_FIX = (
    "use a model and chat template that take tools (llama.cpp's llama-server: --jinja;"
    " llama-cpp-python: --chat_format chatml-function-calling or a functionary model;"
    " Ollama: a model with the tools capability), or take the tools off the persona"
)


class OpenAIChatModel(Model):
    """``<endpoint>:<model>``: chat completions, tool calls, structured output, streaming."""

    def __init__(
        self, endpoint: EndpointClient, name: str, price: tuple[float, float] | None
    ) -> None:
        self.endpoint = endpoint
        self.provider = endpoint.name
        self.name = name
        self.price = price
        self._token_limit = endpoint.config.token_limit_field()

    def estimate_cost(self, input_tokens: int, output_tokens: int) -> float | None:
        """USD from the price table, or None when the model has no price."""
        if self.price is None:
            return None
        return (input_tokens * self.price[0] + output_tokens * self.price[1]) / 1_000_000

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """One chat completion (streamed when the endpoint is set to stream); with an
        output schema, asked for in the endpoint's output mode (see :meth:`_structured`)."""
        if request.response_schema is None:
            result = await self._send(request, None)
        else:
            result = await self._structured(request)
        result.cost_usd = self.estimate_cost(result.usage.input_tokens, result.usage.output_tokens)
        return result

    async def _structured(self, request: ModelRequest) -> ModelResponse:
        """The reply in the endpoint's ``structured_output`` mode; ``auto`` starts with
        what answered last for this model (else ``json_schema``) and moves on to the
        next mode when the server refuses the form, or accepts it and answers with
        something that is not the schema's JSON (it ignored the form)."""
        schema = request.response_schema
        assert schema is not None
        setting = self.endpoint.config.structured_output
        key = (self.endpoint.base_url, self.name)
        auto = setting == "auto"
        modes = OUTPUT_MODES[OUTPUT_MODES.index(output.learned.get(key, OUTPUT_MODES[0])) :]
        if not auto:
            modes = (setting,)
        spent: list[Usage] = []
        notes: list[str] = []
        for i, mode in enumerate(modes):
            last = i == len(modes) - 1
            try:
                result = await self._send(request, mode)
                if mode == "prompt":
                    result = await self._repaired(request, result, spent)
            except EndpointRejected as exc:
                refused = output.refuses_mode(mode, exc, request)
                if refused and auto and not last:
                    notes.append(f"{mode} refused (HTTP {exc.status}: {exc.detail[:160]})")
                    continue
                if refused:
                    hint = (
                        f"output modes tried: {'; '.join([*notes, mode])}"
                        if auto
                        else f"set endpoints.{self.provider}.structured_output to another mode"
                        ' (json_object, tool, prompt) or "auto"'
                    )
                    raise ModelError(
                        f"{exc.explanation}; {hint}", request_id=exc.request_id
                    ) from None
                raise
            spent.append(result.usage)
            if auto and not last and not result.tool_calls and result.finish_reason != "length":
                problem = output_problem(result.text, schema)
                if problem is not None:
                    notes.append(f"{mode} answered, but {problem}")
                    continue
            result.usage = _sum(spent)
            result.output_mode = mode
            if notes:
                said = [*notes, f"{mode} answered", *filter(None, [result.output_note])]
                result.output_note = "; ".join(said)
            if auto and not result.tool_calls and output.learned.get(key) != mode:
                output.learned[key] = mode
                if mode != OUTPUT_MODES[0]:
                    log.warning(
                        "endpoint %s: model %s takes structured output as %s (%s)",
                        self.provider, self.name, mode, "; ".join(notes) or "learned earlier",
                    )  # fmt: skip
            return result
        raise AssertionError("unreachable: the last mode returns or raises")

    async def _repaired(
        self, request: ModelRequest, result: ModelResponse, spent: list[Usage]
    ) -> ModelResponse:
        """A prompted reply that does not match the schema gets one repair round: the
        model hears what was wrong and answers again (both calls' tokens count)."""
        assert request.response_schema is not None
        if result.tool_calls:
            return result
        problem = output_problem(result.text, request.response_schema)
        if problem is None:
            return result
        spent.append(result.usage)
        again = [
            *request.messages,
            Message(role="assistant", content=result.text),
            Message(
                role="user",
                content=f"That answer does not match the JSON Schema: {problem}. Answer again"
                " with only the JSON.",
            ),
        ]
        second = await self._send(request.model_copy(update={"messages": again}), "prompt")
        second.output_note = f"prompt: the first reply did not match ({problem}); one repair round"
        return second

    async def _send(self, request: ModelRequest, mode: str | None) -> ModelResponse:
        """One request and its reply (tokens estimated when the server gave none), its
        schema asked for in output mode ``mode``."""
        stream = self.endpoint.config.stream
        payload = self.payload(request, stream=stream, mode=mode)
        estimated_in = estimate_request_tokens(request)
        budget = estimated_in + (request.max_output_tokens or 0)
        try:
            async with self.endpoint.post(payload, tokens=budget, stream=stream) as sent:
                result = await self._read(sent, stream)
        except EndpointRejected as exc:
            if request.tools and "tool" in exc.detail.lower():
                raise ModelError(
                    f"{exc.explanation}; {self.id} does not take tool calls there: {TOOLS_FIX}",
                    request_id=exc.request_id,
                ) from None
            raise
        if result.usage.input_tokens == 0 and result.usage.output_tokens == 0:
            out = estimate_tokens(result.text or "") + sum(
                estimate_tokens(c.arguments) for c in result.tool_calls
            )
            result.usage = Usage(input_tokens=estimated_in, output_tokens=out, estimated=True)
        if mode is not None:
            result = output.read(mode, result, request)
        if request.tools and not result.tool_calls:
            written = tool_call_in_text(result.text, {t.name for t in request.tools})
            if written is not None:
                raise ModelError(
                    f"{self.id} wrote a call of tool {written!r} as text instead of calling it:"
                    f" the server did not read it as a tool call. {TOOLS_FIX}",
                    request_id=result.request_id,
                )
        return result

    async def _read(self, sent: Sent, stream: bool) -> ModelResponse:
        """The reply of a response with status 200, streamed or whole."""
        response = sent.response
        header_id = response.headers.get("x-request-id")
        if stream:
            reply = StreamedReply()
            first: list[float] = []

            def on_text(text: str) -> None:
                if not first:
                    first.append(time.perf_counter())
                emit_delta(text)

            try:
                await read_stream(response.aiter_lines(), reply, on_text)
            except ModelError as exc:
                raise ModelError(str(exc), request_id=exc.request_id or header_id) from None
            except Exception as exc:  # transport errors mid-stream
                raise ModelError(
                    f"the stream from {self.id} broke off: {type(exc).__name__}: "
                    f"{self.endpoint.redact(str(exc))}",
                    request_id=reply.id or header_id,
                ) from None
            result = self._from_stream(reply, header_id)
            if first:
                result.ttft_ms = (first[0] - sent.sent_at) * 1000
        else:
            result = self._from_body(await response.aread(), header_id)
        result.queued_ms = sent.queued_s * 1000
        return result

    def payload(
        self, request: ModelRequest, *, stream: bool, mode: str | None = "json_schema"
    ) -> dict[str, Any]:
        """The JSON body of the request, its schema (if any) asked for in output mode
        ``mode``."""
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [_message(m) for m in request.messages],
        }
        if request.max_output_tokens is not None:
            body[self._token_limit] = request.max_output_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters or {"type": "object", "properties": {}},
                    },
                }
                for t in request.tools
            ]
        if request.response_schema is not None and mode is not None:
            output.ask(mode, body, request)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _from_body(self, body: bytes, header_id: str | None) -> ModelResponse:
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            snippet = body[:80].decode("utf-8", "replace")
            raise ModelError(
                f"{self.id} answered with something that is not JSON: {snippet!r}",
                request_id=header_id,
            ) from None
        if not isinstance(data, dict):
            raise ModelError(
                f"{self.id} answered with JSON that is not an object", request_id=header_id
            )
        request_id = data.get("id") or header_id
        choices = data.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise ModelError(f"{self.id} answered without choices", request_id=request_id)
        try:
            return self._reply(data, choices[0], request_id)
        except (AttributeError, TypeError, ValueError) as exc:  # a shape no server should send
            raise ModelError(
                f"{self.id} answered with a reply pilothouse cannot read:"
                f" {type(exc).__name__}: {str(exc)[:200]}",
                request_id=request_id,
            ) from None

    def _reply(
        self, data: dict[str, Any], choice: dict[str, Any], request_id: Any
    ) -> ModelResponse:
        message = choice.get("message") or {}
        calls = []
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            if not function.get("name"):
                raise ModelError(
                    f"{self.id} sent a tool call without a name", request_id=request_id
                )
            calls.append(
                ToolCall(
                    id=call.get("id") or f"call_{len(calls)}",
                    name=function["name"],
                    arguments=arguments_text(function.get("arguments")),
                )
            )
        return ModelResponse(
            text=content_text(message.get("content")),
            tool_calls=calls,
            usage=_usage(data.get("usage")),
            finish_reason=choice.get("finish_reason"),
            request_id=request_id,
        )

    def _from_stream(self, reply: StreamedReply, header_id: str | None) -> ModelResponse:
        request_id = reply.id or header_id
        calls = []
        for index in sorted(reply.tool_calls):
            slot = reply.tool_calls[index]
            if not slot["name"]:
                raise ModelError(
                    f"{self.id} streamed a tool call without a name", request_id=request_id
                )
            calls.append(
                ToolCall(
                    id=slot["id"] or f"call_{index}",
                    name=slot["name"],
                    arguments=slot["arguments"] or "{}",
                )
            )
        if not reply.text and not calls and reply.finish_reason is None:
            raise ModelError(f"{self.id} streamed no choices", request_id=request_id)
        return ModelResponse(
            text="".join(reply.text) if reply.text or not calls else None,
            tool_calls=calls,
            usage=_usage(reply.usage),
            finish_reason=reply.finish_reason,
            request_id=request_id,
        )


def _message(m: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def _sum(spent: list[Usage]) -> Usage:
    """The tokens of every request a call made (a fallback or a repair costs too)."""
    return Usage(
        input_tokens=sum(u.input_tokens for u in spent),
        output_tokens=sum(u.output_tokens for u in spent),
        estimated=any(u.estimated for u in spent),
    )


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()
    return Usage(
        input_tokens=int(data.get("prompt_tokens") or 0),
        output_tokens=int(data.get("completion_tokens") or 0),
    )
