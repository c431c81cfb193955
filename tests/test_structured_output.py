"""Structured output and tool calls on servers that are not OpenAI, end to end through a
crew against the test server on 127.0.0.1 made to behave like them (its ``quirks``)."""

from __future__ import annotations

import json
import logging

import pytest
from test_openai import _fast_backoff, _one_step, _run, _settings  # noqa: F401 (a fixture)

import pilothouse_openai.output as output
from openai_server import reply, status, tool_calls
from pilothouse import tool

SCHEMA = {
    "type": "object",
    "properties": {"decision": {"enum": ["approve", "deny"]}, "amount": {"type": "number"}},
    "required": ["decision"],
}
ANSWER = {"decision": "deny", "amount": 5000}


@pytest.fixture(autouse=True)
def _nothing_learned(monkeypatch):
    """Each test starts with no output mode learned for the test server's models."""
    monkeypatch.setattr(output, "learned", {})


def _calls(events):
    return [e for e in events if e.type == "model_call"]


class TestAuto:
    async def test_a_server_that_refuses_json_schema_with_500_gets_json_object(
        self, openai_server, workspace, caplog
    ):
        # llama.cpp's Python server: json_schema refused (500, a validation error),
        # json_object with the schema beside it taken
        openai_server.quirks.refuse_format = {"json_schema": 500}
        openai_server.enqueue(reply(json.dumps(ANSWER)), reply('{"decision": "approve"}'))
        with caplog.at_level(logging.WARNING, logger="pilothouse.openai"):
            result, events = await _run(_settings(), _one_step(output_schema=SCHEMA))
            again, later = await _run(_settings(), _one_step(output_schema=SCHEMA))
        assert result.ok and json.loads(result.output) == ANSWER
        first, second, third = openai_server.received  # the 500 was not retried
        assert first["response_format"]["type"] == "json_schema"
        assert second["response_format"] == {"type": "json_object", "schema": SCHEMA}
        (call,) = _calls(events)
        assert call.output_mode == "json_object"
        assert "json_schema refused (HTTP 500: " in call.output_note
        assert "Input should be 'text' or 'json_object'" in call.output_note
        # learned: the next call asks the way that worked, at once
        assert again.ok and third["response_format"]["type"] == "json_object"
        assert _calls(later)[0].output_mode == "json_object" and not _calls(later)[0].output_note
        told = [r.getMessage() for r in caplog.records if "structured output" in r.getMessage()]
        assert len(told) == 1 and "takes structured output as json_object" in told[0]

    @pytest.mark.parametrize("stream", [False, True])
    async def test_a_gateway_that_refuses_both_formats_gets_a_forced_tool_call(
        self, openai_server, workspace, stream
    ):
        openai_server.quirks.refuse_format = {"json_schema": 400, "json_object": 400}
        openai_server.enqueue(tool_calls(("final_answer", ANSWER)))
        result, events = await _run(_settings(stream=stream), _one_step(output_schema=SCHEMA))
        assert result.ok and json.loads(result.output) == ANSWER
        assert len(openai_server.received) == 3
        sent = openai_server.received[2]
        assert "response_format" not in sent
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "final_answer"}}
        assert sent["tools"][0]["function"]["parameters"] == SCHEMA
        (call,) = _calls(events)
        assert call.output_mode == "tool" and call.text == result.output and not call.tool_calls
        assert call.output_note.count("refused (HTTP 400") == 2

    async def test_a_server_that_ignores_the_format_is_asked_in_words_and_repaired(
        self, openai_server, workspace
    ):
        # every form is accepted and ignored: prose comes back until the schema is in
        # the instructions, and the first prompted reply still needs one repair round
        prose = "I would deny this loan."
        openai_server.enqueue(
            reply(prose), reply(prose), reply(prose),  # json_schema, json_object, tool
            reply('{"decision": "perhaps"}'),  # prompt: not the schema's
            reply("```json\n" + json.dumps(ANSWER) + "\n```"),  # the repair, fenced
        )  # fmt: skip
        result, events = await _run(_settings(), _one_step(output_schema=SCHEMA))
        assert result.ok and json.loads(result.output) == ANSWER
        prompted, repair = openai_server.received[3:]
        assert "response_format" not in prompted and "tools" not in prompted
        system = prompted["messages"][0]
        assert system["role"] == "system" and system["content"].startswith("Be brief.")
        assert "JSON Schema" in system["content"] and '"decision"' in system["content"]
        assert repair["messages"][-2] == {"role": "assistant", "content": '{"decision": "perhaps"}'}
        assert "'perhaps' is not one of" in repair["messages"][-1]["content"]
        (call,) = _calls(events)
        assert call.output_mode == "prompt"
        for said in ("json_schema answered, but the reply is not JSON", "tool answered",
                     "one repair round"):  # fmt: skip
            assert said in call.output_note
        # every request's tokens are counted, the discarded ones too
        assert call.usage.output_tokens >= 5

    async def test_a_bad_key_is_not_mistaken_for_a_refused_format(self, openai_server, workspace):
        openai_server.enqueue(status(401))
        result, _ = await _run(_settings(), _one_step(output_schema=SCHEMA))
        assert result.status == "failed" and "HTTP 401" in result.error
        assert len(openai_server.received) == 1


class TestChosenModes:
    @pytest.mark.parametrize("mode", ["json_schema", "json_object", "tool", "prompt"])
    async def test_each_mode_asks_once_in_its_own_form(self, openai_server, workspace, mode):
        answer = (
            tool_calls(("final_answer", ANSWER)) if mode == "tool" else reply(json.dumps(ANSWER))
        )
        openai_server.enqueue(answer)
        result, events = await _run(
            _settings(structured_output=mode), _one_step(output_schema=SCHEMA)
        )
        assert result.ok and json.loads(result.output) == ANSWER
        (sent,) = openai_server.received
        form = sent.get("response_format", {}).get("type")
        assert form == {"json_schema": "json_schema", "json_object": "json_object"}.get(mode)
        assert ("tool_choice" in sent) is (mode == "tool")
        assert ("JSON Schema" in sent["messages"][0]["content"]) is (mode == "prompt")
        assert _calls(events)[0].output_mode == mode

    async def test_a_chosen_mode_the_server_refuses_fails_saying_what_to_set(
        self, openai_server, workspace
    ):
        openai_server.quirks.refuse_format = {"json_schema": 500}
        result, events = await _run(
            _settings(structured_output="json_schema"), _one_step(output_schema=SCHEMA)
        )
        assert result.status == "failed" and result.error_kind == "model"
        assert "rejected the request as malformed (HTTP 500, not retried)" in result.error
        assert "Input should be 'text' or 'json_object'" in result.error
        assert "set endpoints.local.structured_output to another mode" in result.error
        assert len(openai_server.received) == 1
        assert "Input should be" in _calls(events)[0].error

    async def test_a_prompted_reply_that_never_fits_fails_naming_mode_and_problem(
        self, openai_server, workspace
    ):
        openai_server.enqueue(reply("deny"), reply("still deny"))
        c = _one_step(output_schema=SCHEMA)
        c.limits.max_schema_retries = 0
        result, _ = await _run(_settings(structured_output="prompt"), c)
        assert result.status == "failed" and len(openai_server.received) == 2
        assert "(output mode prompt) gave output that does not match the output schema" in (
            result.error
        )
        assert "the reply is not JSON" in result.error

    async def test_a_reply_cut_at_the_token_limit_says_so(self, openai_server, workspace):
        openai_server.enqueue(reply('{"decision": "deny", "reason": "the', finish="length"))
        c = _one_step(output_schema=SCHEMA, max_output_tokens=16)
        c.limits.max_schema_retries = 0
        result, _ = await _run(_settings(structured_output="json_object"), c)
        assert "(output mode json_object) gave output that does not match" in result.error
        assert "cut off at the output token limit (max_output_tokens = 16)" in result.error

    async def test_a_non_object_schema_travels_wrapped_in_tool_mode(self, openai_server, workspace):
        schema = {"type": "array", "items": {"type": "string"}}
        openai_server.enqueue(tool_calls(("final_answer", {"output": ["a", "b"]})))
        result, _ = await _run(_settings(structured_output="tool"), _one_step(output_schema=schema))
        assert result.ok and json.loads(result.output) == ["a", "b"]
        parameters = openai_server.received[0]["tools"][0]["function"]["parameters"]
        assert parameters["properties"]["output"] == schema


class TestTools:
    @pytest.fixture
    def lookup(self, scripted):
        @tool(blocking=False)
        def lookup(sku: str) -> str:
            """Stock of a product."""
            return "12 in stock"

        scripted.tools.append(lookup)
        return scripted

    async def test_a_server_that_refuses_tools_fails_the_step_saying_how_to_fix_it(
        self, openai_server, workspace, lookup
    ):
        openai_server.quirks.refuse_tools = 500
        result, _ = await _run(_settings(), _one_step(tools=["lookup"]), plugins=[lookup])
        assert result.status == "failed" and result.error_kind == "model"
        assert "tools are not supported with chat format 'gemma'" in result.error
        assert "does not take tool calls there" in result.error and "--jinja" in result.error
        assert len(openai_server.received) == 1  # a refusal retrying cannot change

    async def test_a_tool_call_written_as_text_is_caught(self, openai_server, workspace, lookup):
        openai_server.enqueue(reply('{"name": "lookup", "arguments": {"sku": "H30"}}'))
        result, _ = await _run(_settings(), _one_step(tools=["lookup"]), plugins=[lookup])
        assert result.status == "failed"
        assert "wrote a call of tool 'lookup' as text instead of calling it" in result.error

    async def test_tools_and_a_schema_together_in_tool_mode(self, openai_server, workspace, lookup):
        # the persona's tool first, then the answer through the output tool
        openai_server.enqueue(tool_calls(("lookup", {"sku": "H30"})),
                              tool_calls(("final_answer", ANSWER)))  # fmt: skip
        result, _ = await _run(
            _settings(structured_output="tool"),
            _one_step(tools=["lookup"], output_schema=SCHEMA),
            plugins=[lookup],
        )
        assert result.ok and json.loads(result.output) == ANSWER
        first, second = openai_server.received
        assert first["tool_choice"] == "required"
        assert [t["function"]["name"] for t in first["tools"]] == ["lookup", "final_answer"]
        assert second["messages"][-1] == {
            "role": "tool", "content": "12 in stock", "tool_call_id": "call_0"
        }  # fmt: skip


class TestServerWords:
    async def test_retried_errors_say_what_the_server_said(self, openai_server, workspace, caplog):
        body = json.dumps({"error": {"message": "model is loading, try later"}})
        openai_server.enqueue(status(503, body=body), status(503, body=body))
        with caplog.at_level(logging.WARNING, logger="pilothouse.openai"):
            result, events = await _run(_settings(max_retries=1), _one_step())
        assert "failed after 2 attempts: HTTP 503; the server said: model is loading" in (
            result.error
        )
        assert "the server said: model is loading" in caplog.records[0].getMessage()
        assert "model is loading" in _calls(events)[0].error

    async def test_a_5xx_that_is_a_validation_error_is_not_retried(self, openai_server, workspace):
        body = json.dumps({"error": {"message": "1 validation error: messages.0.role: Input"
                                                " should be 'user' or 'assistant'"}})  # fmt: skip
        openai_server.enqueue(status(500, body=body), reply("never"))
        result, _ = await _run(_settings(), _one_step())
        assert result.status == "failed" and len(openai_server.received) == 1
        assert "malformed (HTTP 500, not retried); the server said: 1 validation error" in (
            result.error
        )

    async def test_a_body_that_is_not_json_is_quoted_in_part(self, openai_server, workspace):
        openai_server.enqueue(status(400, body="<html>" + "x" * 1000 + "</html>"))
        result, _ = await _run(_settings(), _one_step())
        said = result.error.split("the server said: ", 1)[1]
        assert said.startswith("<html>xxx") and len(said.split(" (request id")[0]) == 300
