"""A chat model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

from __future__ import annotations

import json
import time
from typing import Any

from pilothouse import Model, ModelError, ModelRequest, ModelResponse, ToolCall, Usage
from pilothouse.model import emit_delta, estimate_request_tokens, estimate_tokens

from .endpoint import EndpointClient
from .shapes import arguments_text, content_text
from .sse import StreamedReply, read_stream


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
        """One chat completion, streamed when the endpoint is set to stream."""
        stream = self.endpoint.config.stream
        payload = self.payload(request, stream=stream)
        estimated_in = estimate_request_tokens(request)
        budget = estimated_in + (request.max_output_tokens or 0)
        async with self.endpoint.post(payload, tokens=budget, stream=stream) as sent:
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
                body = await response.aread()
                result = self._from_body(body, header_id)
            result.queued_ms = sent.queued_s * 1000
        if result.usage.input_tokens == 0 and result.usage.output_tokens == 0:
            out = estimate_tokens(result.text or "") + sum(
                estimate_tokens(c.arguments) for c in result.tool_calls
            )
            result.usage = Usage(input_tokens=estimated_in, output_tokens=out, estimated=True)
        result.cost_usd = self.estimate_cost(result.usage.input_tokens, result.usage.output_tokens)
        return result

    def payload(self, request: ModelRequest, *, stream: bool) -> dict[str, Any]:
        """The JSON body of the request."""
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
        if request.response_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.response_schema},
            }
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


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()
    return Usage(
        input_tokens=int(data.get("prompt_tokens") or 0),
        output_tokens=int(data.get("completion_tokens") or 0),
    )
