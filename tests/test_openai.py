"""The OpenAI-compatible provider against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import anyio
import pytest

import pilothouse
import pilothouse.store.sqlite
from conftest import crew
from openai_server import Answer, reply, status, tool_calls
from pilothouse import tool

KEY = "sk-test-secret-0123456789abcdef"


def _settings(**endpoint):
    """Settings with one endpoint ``local`` at the test server (no retries wait long)."""
    url = os.environ["OPENAI_BASE_URL"]
    config = {"base_url": url, "api_key": KEY, **endpoint}
    return pilothouse.load_settings(endpoints={"local": config}, default_model="local:test")


def _one_step(**persona):
    return crew(
        {"type": "sequential", "steps": ["a"]}, {"a": {"instructions": "Be brief.", **persona}}
    )


async def _run(settings, c, text="hello", plugins=()):
    async with pilothouse.Runtime(settings, plugins=list(plugins)) as rt:
        result = await rt.run(c, text)
        return result, rt.store.events(result.run_id)


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    """Retries wait 10 ms instead of seconds (Retry-After still counts as sent)."""
    import pilothouse_openai.endpoint as endpoint

    monkeypatch.setattr(endpoint, "_backoff", lambda attempt: 0.01)


class TestEndToEnd:
    @pytest.mark.slow
    def test_pilothouse_run_against_the_server_logs_what_it_received(
        self, openai_server, workspace
    ):
        env = {**os.environ}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pilothouse",
                "run",
                "marketing",
                "-i",
                "Launch the Helio 30",
                "--model",
                "openai:gpt-4o-mini",
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        run_id = json.loads(done.stdout)["run_id"]
        store = pilothouse.store.sqlite.SQLiteRunStore(workspace / ".pilothouse" / "runs.db")
        calls = [e for e in store.events(run_id) if e.type == "model_call"]
        assert len(calls) == len(openai_server.received) == 4
        for call, sent in zip(calls, openai_server.received, strict=True):
            assert sent["model"] == "gpt-4o-mini" and call.model == "openai:gpt-4o-mini"
            assert [m.model_dump(exclude_none=True) for m in call.messages] == [
                {k: v for k, v in m.items() if v is not None} for m in sent["messages"]
            ]
            assert call.request_id.startswith("req-") and call.ttft_ms is None  # not streamed
            assert call.cost_usd > 0 and not call.usage.estimated
        assert all(a == f"Bearer {KEY}" for a in openai_server.auth)
        raw = (workspace / ".pilothouse" / "runs.db").read_bytes()
        assert KEY.encode() not in raw and KEY not in done.stderr + done.stdout
        store.close()

    @pytest.mark.slow
    def test_cli_reports_a_rejected_key_without_printing_it(self, openai_server, workspace):
        openai_server.by_model["gpt-4o"] = status(401)
        done = subprocess.run(
            [sys.executable, "-m", "pilothouse", "run", "support", "-i", "hello", "--model",
             "openai:gpt-4o"],
            capture_output=True, text=True, env={**os.environ}, timeout=120,
        )  # fmt: skip
        assert done.returncode == 1
        assert "rejected the API key (HTTP 401): set OPENAI_API_KEY" in done.stderr
        assert KEY not in done.stderr + done.stdout
        runs = subprocess.run(
            [sys.executable, "-m", "pilothouse", "runs", "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert [r["status"] for r in json.loads(runs.stdout)] == ["failed"]


class TestProtocol:
    @pytest.mark.parametrize("stream", [True, False])
    async def test_tool_calls_including_parallel_ones(
        self, openai_server, workspace, scripted, stream
    ):
        seen = []

        @tool(blocking=False)
        def lookup(city: str) -> str:
            """Look a city up."""
            seen.append(city)
            return f"{city}: sunny"

        scripted.tools.append(lookup)
        openai_server.enqueue(
            tool_calls(("lookup", {"city": "Oslo"}), ("lookup", {"city": "Rome"})),
            reply("Both sunny."),
        )
        result, _ = await _run(
            _settings(stream=stream), _one_step(tools=["lookup"]), plugins=[scripted]
        )
        assert result.ok and result.output == "Both sunny." and seen == ["Oslo", "Rome"]
        first, second = openai_server.received
        assert first["tools"][0]["function"]["name"] == "lookup"
        assert first["tools"][0]["function"]["parameters"]["required"] == ["city"]
        assert [m["role"] for m in second["messages"]] == [
            "system",
            "user",
            "assistant",
            "tool",
            "tool",
        ]
        assert second["messages"][2]["tool_calls"][1]["function"]["arguments"] == '{"city": "Rome"}'
        assert second["messages"][3] == {
            "role": "tool",
            "content": "Oslo: sunny",
            "tool_call_id": "call_0",
        }

    async def test_structured_output_sends_the_schema(self, openai_server, workspace):
        schema = {
            "type": "object",
            "properties": {"risk": {"type": "number"}},
            "required": ["risk"],
        }
        openai_server.enqueue(reply('{"risk": 0.2}'))
        result, _ = await _run(_settings(), _one_step(output_schema=schema))
        assert result.ok and json.loads(result.output) == {"risk": 0.2}
        sent = openai_server.received[0]["response_format"]
        assert sent == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}

    async def test_deltas_reach_observers_but_not_the_store(self, openai_server, workspace):
        openai_server.enqueue(reply("one two three four"))
        deltas = []
        async with pilothouse.Runtime(_settings(stream=True)) as rt:
            rt.subscribe(lambda e: deltas.append(e.text) if e.type == "model_delta" else None)
            result = await rt.run(_one_step(), "count")
            events = rt.store.events(result.run_id)
        assert "".join(deltas) == "one two three four" and len(deltas) == 4
        assert "model_delta" not in {e.type for e in events}
        call = next(e for e in events if e.type == "model_call")
        assert 0 < call.ttft_ms <= call.latency_ms

    @pytest.mark.parametrize("stream", [True, False])
    async def test_calls_in_turn_reuse_one_connection(self, openai_server, workspace, stream):
        # A stream closed before its body ends takes its connection with it: every
        # streamed call would then pay a new connection (and a TLS handshake).
        three = crew(
            {"type": "sequential", "steps": ["a", "b", "c"]},
            {name: {"instructions": f"You are {name}."} for name in "abc"},
        )
        result, _ = await _run(_settings(stream=stream, max_concurrency=1), three)
        assert result.ok and openai_server.counter == 3
        assert len(openai_server.connections) == 1

    async def test_a_stream_held_open_after_done_does_not_hold_the_run(
        self, openai_server, workspace
    ):
        openai_server.enqueue(reply("all there", linger=30))
        with anyio.fail_after(10):  # the server would hold the body open for 30 s
            result, events = await _run(_settings(stream=True), _one_step())
        assert result.ok and result.output == "all there"
        call = next(e for e in events if e.type == "model_call")
        assert call.error is None and call.usage.output_tokens > 0

    async def test_a_run_cancelled_mid_stream_leaves_no_live_text(self, openai_server, workspace):
        # The text streamed so far is published for monitors in other processes; a call
        # cut off by a cancellation is never logged, so the run's end must clear it.
        openai_server.enqueue(reply(" ".join(f"w{i}" for i in range(40)), pace=0.02))
        async with pilothouse.Runtime(_settings(stream=True)) as rt:
            rt.live.interval = 0.02
            seen = []

            def cancel_at_the_fifth_delta(event):
                if event.type == "model_delta":
                    seen.append(event.text)
                    if len(seen) == 5:  # this delta is not published yet
                        rt.engine.cancel("r-live", "stop")

            rt.subscribe(cancel_at_the_fifth_delta)
            with anyio.fail_after(10):
                result = await rt.run(_one_step(), "hello", run_id="r-live")
            await anyio.sleep(0.2)  # ten publishing rounds
            assert result.status == "cancelled" and len(seen) >= 5
            assert rt.store.live("r-live") == {}

    @pytest.mark.parametrize("stream", [True, False])
    async def test_a_reply_cut_at_the_token_limit_is_logged_as_cut(
        self, openai_server, workspace, stream
    ):
        openai_server.enqueue(reply("The launch plan has three", finish="length"))
        result, events = await _run(_settings(stream=stream), _one_step(max_output_tokens=5))
        call = next(e for e in events if e.type == "model_call")
        assert result.ok and call.finish_reason == "length"
        assert call.stop_note == "cut off at the output token limit"
        shown = subprocess.run(
            [sys.executable, "-m", "pilothouse", "show", result.run_id],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "-> answer (cut off at the output token limit)" in shown.stdout, shown.stderr

    async def test_missing_usage_is_estimated_and_marked(self, openai_server, workspace):
        openai_server.enqueue(Answer(text="no usage here", usage=False))
        _, events = await _run(_settings(stream=False), _one_step())
        call = next(e for e in events if e.type == "model_call")
        assert (
            call.usage.estimated and call.usage.input_tokens > 0 and call.usage.output_tokens == 4
        )

    async def test_costs_come_from_the_price_table_and_config(self, openai_server, workspace):
        openai_server.enqueue(reply("x"), reply("y"))
        settings = pilothouse.load_settings(prices={"gpt-4o-mini": {"input": 1000, "output": 0}})
        c = _one_step(model="openai:gpt-4o-mini")
        result, events = await _run(settings, c)
        call = next(e for e in events if e.type == "model_call")
        assert call.cost_usd == pytest.approx(call.usage.input_tokens * 1000 / 1e6)
        default = pilothouse.load_settings()
        result, events = await _run(default, c)
        call = next(e for e in events if e.type == "model_call")
        expected = (call.usage.input_tokens * 0.15 + call.usage.output_tokens * 0.60) / 1e6
        assert call.cost_usd == pytest.approx(expected) and result.cost_usd == pytest.approx(
            expected
        )


class TestFaults:
    async def test_an_endpoint_that_needs_a_key_it_lacks_fails_before_any_call(
        self, openai_server, workspace, monkeypatch
    ):
        monkeypatch.delenv("OPENAI_API_KEY")
        monkeypatch.delenv("MY_KEY", raising=False)
        url = os.environ["OPENAI_BASE_URL"]
        # the implicit endpoint at a local server: no key may be fine
        local = pilothouse.load_settings(default_model="openai:test")
        result, _ = await _run(local, _one_step())
        assert result.ok and len(openai_server.received) == 1
        # a key named by api_key_env that is not set, and OpenAI's own API without one
        named = pilothouse.load_settings(
            endpoints={"local": {"base_url": url, "api_key_env": "MY_KEY"}},
            default_model="local:test",
        )
        with pytest.raises(pilothouse.ConfigError, match="needs an API key: set MY_KEY"):
            await _run(named, _one_step())
        monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")
        hosted = pilothouse.load_settings(default_model="openai:gpt-4o")
        with pytest.raises(pilothouse.ConfigError, match=r"set OPENAI_API_KEY$"):
            await _run(hosted, _one_step())
        assert len(openai_server.received) == 1  # neither was tried

    async def test_429_honours_retry_after(self, openai_server, workspace):
        openai_server.enqueue(status(429, headers={"retry-after": "0.3"}), reply("finally"))
        result, _ = await _run(_settings(), _one_step())
        assert result.ok and result.output == "finally"
        first, second = openai_server.stamps
        assert second - first >= 0.29

    async def test_credentials_in_the_url_never_reach_the_error_or_the_log(
        self, openai_server, workspace
    ):
        url = os.environ["OPENAI_BASE_URL"].replace("http://", "http://alice:pw-in-url@")
        url += "?api-key=qk-in-url"
        echo = json.dumps({"error": {"message": "bad request from alice:pw-in-url (qk-in-url)"}})
        openai_server.enqueue(status(400, body=echo))
        settings = pilothouse.load_settings(
            endpoints={"local": {"base_url": url, "api_key": KEY}}, default_model="local:test"
        )
        result, events = await _run(settings, _one_step())
        assert openai_server.targets == ["/v1/chat/completions?api-key=qk-in-url"]
        assert result.status == "failed"
        assert "(http://alice:********@127.0.0.1:" in result.error
        assert "the server said: bad request from alice:*** (***)" in result.error
        logged = " ".join(e.model_dump_json() for e in events)
        for secret in ("pw-in-url", "qk-in-url", KEY):
            assert secret not in result.error and secret not in logged

    async def test_5xx_and_timeouts_are_retried(self, openai_server, workspace):
        openai_server.enqueue(status(500), status(503), Answer(text="slow", delay=2), reply("ok"))
        result, _ = await _run(_settings(timeout_s=0.5), _one_step())
        assert result.ok and result.output == "ok" and len(openai_server.received) == 4

    async def test_retries_run_out_with_a_clear_error(self, openai_server, workspace):
        openai_server.enqueue(*[status(502)] * 3)
        result, _ = await _run(_settings(max_retries=2), _one_step())
        assert result.status == "failed" and result.error_kind == "model"
        assert "failed after 3 attempts: HTTP 502" in result.error

    async def test_the_token_limit_field_follows_the_server(self, openai_server, workspace):
        # OpenAI's reasoning models refuse max_tokens; the servers people run read it
        from pilothouse.settings import Endpoint

        assert Endpoint().token_limit_field() == "max_completion_tokens"  # api.openai.com
        assert Endpoint(base_url="http://127.0.0.1:8000/v1").token_limit_field() == "max_tokens"
        limited = _one_step(max_output_tokens=50)
        await _run(_settings(), limited)
        await _run(_settings(max_tokens_field="max_completion_tokens"), limited)
        first, second = openai_server.received
        assert (first["max_tokens"], "max_completion_tokens" in first) == (50, False)
        assert (second["max_completion_tokens"], "max_tokens" in second) == (50, False)

        refused = ("Unsupported parameter: 'max_tokens' is not supported with this model."
                   " Use 'max_completion_tokens' instead.")  # fmt: skip
        too_many = "max_tokens is too large: 50. This model supports at most 16 tokens."
        for message, hint in ((refused, True), (too_many, False)):
            body = json.dumps({"error": {"message": message}})
            openai_server.enqueue(status(400, body=body))
            result, _ = await _run(_settings(), limited)
            assert result.status == "failed" and "HTTP 400" in result.error
            said = 'set endpoints.local.max_tokens_field = "max_completion_tokens"'
            assert (said in result.error) is hint, result.error
        no_temperature = ("Unsupported value: 'temperature' does not support 0.2 with this"
                          " model. Only the default (1) value is supported.")  # fmt: skip
        openai_server.enqueue(status(400, body=json.dumps({"error": {"message": no_temperature}})))
        result, _ = await _run(_settings(), _one_step(temperature=0.2))
        assert "; this model takes no temperature: drop it from the persona (request id" in (
            result.error
        )

    @pytest.mark.parametrize(
        ("code", "message"),
        [
            (401, "rejected the API key (HTTP 401): set endpoints.local.api_key"),
            (403, "refused access to model 'test' (HTTP 403)"),
            (404, "has no model 'test' or no /chat/completions (HTTP 404)"),
            (400, "rejected the request (HTTP 400); the server said: scripted 400"),
        ],
    )
    async def test_client_errors_fail_at_once_without_the_key(
        self, openai_server, workspace, code, message
    ):
        body = json.dumps({"error": {"message": f"scripted {code} for key {KEY}"}})
        openai_server.enqueue(status(code, body=body), reply("never"))
        result, events = await _run(_settings(), _one_step())
        assert result.status == "failed" and message in result.error
        assert len(openai_server.received) == 1
        assert KEY not in result.error and "***" in result.error
        assert "(request id req-1)" in result.error
        assert all(KEY not in e.model_dump_json() for e in events)

    @pytest.mark.parametrize(
        ("answer", "stream", "message"),
        [
            (Answer(kind="garbage"), False, "answered with something that is not JSON"),
            (Answer(kind="no_choices"), False, "answered without choices"),
            (
                status(200, body=json.dumps({"choices": [{"message": "not an object"}]})),
                False,
                "answered with a reply pilothouse cannot read: AttributeError",
            ),
            (
                Answer(kind="cut", text="a long reply that is cut in the middle"),
                True,
                "the stream ended before [DONE]: the reply was cut off",
            ),
        ],
    )
    async def test_garbage_and_cut_streams_are_model_errors(
        self, openai_server, workspace, answer, stream, message
    ):
        openai_server.enqueue(answer)
        result, _ = await _run(_settings(stream=stream), _one_step())
        assert result.status == "failed" and message in result.error
        assert "(request id req-" in result.error

    async def test_replies_in_shapes_servers_take_liberties_with_are_read(
        self, openai_server, workspace, scripted
    ):
        # arguments as an object instead of JSON text, content as a list of parts
        seen = []

        @tool(blocking=False)
        def lookup(sku: str, qty: int) -> str:
            """Stock of a product."""
            seen.append((sku, qty))
            return "12 in stock"

        scripted.tools.append(lookup)
        call = {"id": "c1", "type": "function",
                "function": {"name": "lookup", "arguments": {"sku": "H30", "qty": 2}}}  # fmt: skip
        parts = [{"type": "text", "text": "12 are "}, {"type": "text", "text": "in stock."}]
        openai_server.enqueue(
            status(200, body=json.dumps({"choices": [{"message": {"tool_calls": [call]}}]})),
            status(200, body=json.dumps({"choices": [{"message": {"content": parts}}]})),
        )
        result, _ = await _run(_settings(), _one_step(tools=["lookup"]), plugins=[scripted])
        assert result.ok and result.output == "12 are in stock."
        assert seen == [("H30", 2)]

    async def test_an_unreachable_server_fails_after_retries(self, workspace):
        sock = __import__("socket").socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        settings = pilothouse.load_settings(
            endpoints={"down": {"base_url": f"http://127.0.0.1:{port}/v1", "max_retries": 2}},
            default_model="down:m",
        )
        result, _ = await _run(settings, _one_step())
        assert result.status == "failed" and "failed after 3 attempts: ConnectError" in result.error

    async def test_fallback_takes_over_and_the_switch_is_logged(self, openai_server, workspace):
        openai_server.by_model["broken"] = status(503)
        c = _one_step(model="local:broken", fallbacks=["local:spare"])
        result, events = await _run(_settings(max_retries=1), c)
        assert result.ok and result.output.startswith("echo:")
        switch = next(e for e in events if e.type == "model_switched")
        assert (switch.failed, switch.next) == ("local:broken", "local:spare")
        assert [r["model"] for r in openai_server.received] == ["broken", "broken", "spare"]


class TestLimits:
    async def test_concurrency_limit_per_endpoint(self, openai_server, workspace):
        openai_server.latency = 0.05
        settings = _settings(max_concurrency=3)
        async with pilothouse.Runtime(settings) as rt, anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(rt.run, _one_step(), f"task {i}")
        assert len(openai_server.received) == 12 and openai_server.peak_in_flight == 3

    async def test_the_wait_for_the_limit_is_told_apart_from_the_model(
        self, openai_server, workspace
    ):
        # latency_ms is what the run waited; queued_ms says how much of it was the
        # endpoint's own limit, so a slow p95 is not blamed on the model
        openai_server.latency = 0.1
        settings = _settings(max_concurrency=1)
        async with pilothouse.Runtime(settings) as rt:
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(rt.run, _one_step(), f"task {i}")
            calls = [e for r in rt.store.list_runs() for e in rt.store.events(r.id)
                     if e.type == "model_call"]  # fmt: skip
        waits = sorted(c.queued_ms for c in calls)
        assert waits[0] < 50 and waits[2] >= 150  # the third waited for both others
        for call in calls:
            assert 90 <= call.latency_ms - call.queued_ms < 1000  # the model's own 100 ms
        last = max(calls, key=lambda c: c.queued_ms)
        assert last.queue_note.endswith("ms of it waiting for the endpoint's limits")
        assert calls[0].model_copy(update={"queued_ms": 3.0}).queue_note == ""
        from pilothouse.audits.metrics import compute

        (local,) = compute(settings.store_path, by="model")
        assert local.queued_p95_ms == pytest.approx(waits[2], rel=0.2)
        assert local.latency_p95_ms > local.queued_p95_ms

    async def test_the_limit_is_reached_across_small_pools(self, openai_server, workspace):
        # connections are split over pools of POOL_SIZE (an httpx pool's cost per
        # request grows with its size); together they still carry the whole limit
        from pilothouse_openai.endpoint import POOL_SIZE

        openai_server.latency = 0.2
        settings = _settings(max_concurrency=POOL_SIZE * 2 + 1)
        async with pilothouse.Runtime(settings) as rt, anyio.create_task_group() as tg:
            for i in range(POOL_SIZE * 4):
                tg.start_soon(rt.run, _one_step(), f"task {i}")
            pools = rt.registry.models["local"].value.client.pools()
        assert [p._transport._pool._max_connections for p in pools] == [POOL_SIZE, POOL_SIZE, 1]
        assert openai_server.peak_in_flight == POOL_SIZE * 2 + 1
        assert len(openai_server.received) == POOL_SIZE * 4

    async def test_requests_per_minute_bucket(self):
        from pilothouse_openai.ratelimit import Bucket

        bucket = Bucket(per_minute=600)  # 10 a second, bursts of 100
        start = time.monotonic()
        for _ in range(105):
            await bucket.take(1)
        assert 0.4 <= time.monotonic() - start < 2

    async def test_cancelling_a_run_cancels_its_request(self, openai_server, workspace):
        openai_server.latency = 5
        async with pilothouse.Runtime(_settings()) as rt:
            with anyio.move_on_after(0.3):
                await rt.run(_one_step(), "slow", run_id="cancel-me")
            assert rt.store.get_run("cancel-me").status == "cancelled"
        with anyio.fail_after(3):
            while not openai_server.disconnected:
                await anyio.sleep(0.02)
        assert openai_server.disconnected == 1
