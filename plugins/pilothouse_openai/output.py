"""Structured output modes: how a request asks a server for a persona's schema, and how
the reply is read back.

Servers differ exactly here: OpenAI and vLLM take ``response_format`` of type
``json_schema``; llama.cpp's Python server takes ``json_object`` with the schema beside
it and refuses ``json_schema`` (HTTP 500); some servers take neither but call tools,
and some only follow instructions. ``auto`` tries them in
:data:`pilothouse.structured.OUTPUT_MODES` order (see :mod:`.chat`).
"""

from __future__ import annotations

import json
from typing import Any

from pilothouse import ModelRequest, ModelResponse, schema_instructions, unfenced

from .endpoint import EndpointRejected

#: the tool a ``tool``-mode request forces the model to call with its answer
OUTPUT_TOOL = "final_answer"
#: the property a non-object schema is wrapped in as a tool's arguments (a tool's
#: parameters are an object)
WRAPPED = "output"

#: what a refusal of the schema's form says (a server's validation error names the
#: field it refused)
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "schema", "guided", "grammar")
#: request fields whose refusal is not about the schema's form
_OTHER_FIELDS = ("max_tokens", "max_completion_tokens", "temperature", "messages", "model")

#: the output mode that answered, per (base URL, model), for the life of the process
learned: dict[tuple[str, str], str] = {}


def ask(mode: str, body: dict[str, Any], request: ModelRequest) -> None:
    """Put ``request``'s schema into the request ``body`` the way ``mode`` asks for it."""
    schema = request.response_schema
    assert schema is not None
    if mode == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema},
        }
    elif mode == "json_object":
        body["response_format"] = {"type": "json_object", "schema": schema}
    elif mode == "tool":
        tool = {
            "type": "function",
            "function": {
                "name": OUTPUT_TOOL,
                "description": "Give your final answer: call this exactly once, with the answer"
                " as its arguments.",
                "parameters": tool_parameters(schema),
            },
        }
        # with tools of its own the model may need them first; it must end with the answer
        body["tool_choice"] = (
            "required"
            if body.get("tools")
            else {"type": "function", "function": {"name": OUTPUT_TOOL}}
        )
        body["tools"] = [*body.get("tools", ()), tool]
    elif mode == "prompt":
        body["messages"] = _with_instructions(body["messages"], schema_instructions(schema))
    else:
        raise ValueError(f"unknown output mode {mode!r}")


def read(mode: str, response: ModelResponse, request: ModelRequest) -> ModelResponse:
    """The reply as the persona gets it: a ``tool``-mode answer's arguments as its text,
    and a prompted answer without the code fence models put around it."""
    if mode == "tool":
        answer = next((c for c in response.tool_calls if c.name == OUTPUT_TOOL), None)
        if answer is not None:
            text = answer.arguments
            if (request.response_schema or {}).get("type") != "object":
                text = _unwrapped(text)
            response.text, response.tool_calls = text, []
            return response
    if mode in ("prompt", "json_object", "tool") and not response.tool_calls:
        response.text = unfenced(response.text)
    return response


def tool_parameters(schema: dict[str, Any]) -> dict[str, Any]:
    """The output tool's parameters: the schema itself when it is an object's."""
    if schema.get("type") == "object":
        return schema
    return {"type": "object", "properties": {WRAPPED: schema}, "required": [WRAPPED]}


def refuses_mode(mode: str, exc: EndpointRejected, request: ModelRequest) -> bool:
    """Whether the server's refusal is about the form the schema was asked in (so the
    next mode may do), not about the key, the model or another field."""
    if exc.status in (401, 403, 404, 408, 429):
        return False
    low = exc.detail.lower()
    if mode == "tool":
        # the persona's own tools refused: no mode helps (see chat.tools_refused)
        return "tool" in low and not request.tools
    if any(word in low for word in _FORMAT_WORDS):
        return True
    # a bare 400/422 names no field: the response format is what is unusual in it
    return exc.status in (400, 422) and not any(field in low for field in _OTHER_FIELDS)


def _with_instructions(messages: list[dict[str, Any]], instructions: str) -> list[dict[str, Any]]:
    # into the first system message: some chat templates take only one
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{instructions}".lstrip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


def _unwrapped(arguments: str) -> str:
    try:
        data = json.loads(arguments)
    except json.JSONDecodeError:
        return arguments  # the schema check says what is wrong with it
    if isinstance(data, dict) and WRAPPED in data:
        return json.dumps(data[WRAPPED], ensure_ascii=False)
    return arguments
