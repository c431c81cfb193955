"""The monitor's data side: incremental reads, filters, window numbers, redaction."""

from __future__ import annotations

import pytest

import pilothouse
from conftest import crew, text_reply
from pilothouse import ConfigError
from pilothouse.redact import Redactor
from pilothouse.tui.feed import Feed, RunFilter


def _one_step():
    return crew({"type": "sequential", "steps": ["w"]}, {"w": {"instructions": "Write."}})


async def test_the_feed_reads_only_what_is_new(make_runtime, scripted, workspace):
    path = pilothouse.load_settings().store_path
    async with make_runtime() as rt:
        first = await rt.run(_one_step(), "first")
        feed = Feed(path)
        opened = feed.poll()
        assert opened.reloaded and [r.id for r in opened.runs] == [first.run_id]
        assert not feed.poll()  # nothing new: nothing read, nothing to redraw
        second = await rt.run(_one_step(), "second")
    changes = feed.poll()
    assert changes.new_runs == [second.run_id]
    assert [r.id for r in changes.runs] == [second.run_id]  # the first run was not re-read
    assert {s.event.run_id for s in changes.events} == {second.run_id}
    assert changes.events[0].event.type == "run_started"
    assert feed.runs[second.run_id].status == "succeeded"
    assert [r.id for r in feed.visible(RunFilter())] == [second.run_id, first.run_id]
    feed.close()


async def test_window_numbers(make_runtime, scripted, workspace):
    scripted.provider.enqueue(text_reply("ok", tokens=(7, 3)), RuntimeError("model down"))
    async with make_runtime() as rt:
        await rt.run(_one_step(), "a")
        await rt.run(_one_step(), "b")
    feed = Feed(pilothouse.load_settings().store_path)
    feed.poll()
    stats = feed.stats(3600)
    assert stats.runs == 2 and stats.counts == {"succeeded": 1, "failed": 1}
    assert stats.rate("succeeded") == 0.5 and stats.rate("failed") == 0.5
    assert stats.tokens == 10 and stats.escalation_rate == 0
    later = Feed(feed.location, clock=lambda: max(r.created for r in feed.runs.values()) + 7200)
    later.poll()
    assert later.stats(3600).runs == 0 and later.stats(86400).runs == 2
    feed.close()
    later.close()


def test_filter_terms():
    flt = RunFilter.parse("status:failed crew:support Card")
    assert (flt.status, flt.crew, flt.text) == ("failed", "support", "card")
    base = {"created": 0.0, "updated": 0.0, "input": "my card", "id": "abc"}
    run = pilothouse.RunSummary(crew="support", status="failed", **base)
    assert flt.matches(run)
    assert not flt.matches(run.model_copy(update={"status": "succeeded"}))
    assert not flt.matches(run.model_copy(update={"crew": "marketing"}))
    assert not RunFilter.parse("parcel").matches(run)
    assert RunFilter.parse("status:wait").matches(
        run.model_copy(update={"status": "waiting_for_human"})
    )
    probe = run.model_copy(update={"subject": "audit:bias:female"})
    assert RunFilter.parse("audit:yes").matches(probe) and not RunFilter.parse("audit:yes").matches(
        run
    )
    assert RunFilter.parse("audit:no").matches(run) and not RunFilter.parse("audit:no").matches(
        probe
    )
    assert RunFilter.parse("card").matches(probe)


def test_redaction_of_keys_patterns_and_emails(monkeypatch):
    monkeypatch.setenv("PILOTHOUSE_ENDPOINTS__LOCAL__API_KEY", "local-key-123456")
    monkeypatch.setenv("PILOTHOUSE_ENDPOINTS__LOCAL__BASE_URL", "http://u:pass-in-url@h/v1")
    monkeypatch.setenv("PILOTHOUSE_REDACT_PATTERNS", '["ACME-\\\\d{4}"]')
    monkeypatch.setenv("PILOTHOUSE_REDACT_EMAILS", "true")
    monkeypatch.setenv("OTHER_VENDOR_API_KEY", "plain-vendor-key")  # a provider's convention
    monkeypatch.setenv("SHORT_TOKEN", "x")  # too short to be taken for a secret
    redact = Redactor.from_settings(pilothouse.load_settings())
    text = ("key local-key-123456, sk-abcdefghijklmnop1234, Bearer abc.def.ghi.jkl,"
            " case ACME-1234, mail ana@example.com, url pass-in-url, env plain-vendor-key,"
            " x marks the spot")  # fmt: skip
    shown = redact(text)
    for secret in ("local-key-123456", "sk-abcdefghijklmnop1234", "abc.def.ghi.jkl", "ACME-1234",
                   "ana@example.com", "pass-in-url", "plain-vendor-key"):  # fmt: skip
        assert secret not in shown
    assert shown.count("[redacted]") == 7 and "x marks the spot" in shown
    assert Redactor()("mail ana@example.com") == "mail ana@example.com"  # only when asked


def test_a_bad_redaction_pattern_is_named(monkeypatch):
    monkeypatch.setenv("PILOTHOUSE_REDACT_PATTERNS", '["a("]')
    with pytest.raises(ConfigError, match=r"redact_patterns.*not a regular expression"):
        pilothouse.load_settings()


def test_a_run_whose_process_dies_shows_as_stalled(tmp_path):
    # A dying process writes no event, so the feed reads its unfinished runs again
    # every LEASE_CHECK_S: the fleet and `pilothouse runs` say 'stalled', not 'running'.
    import subprocess
    import sys

    from pilothouse.events import RunStarted, log_entry
    from pilothouse.store.lease import HOST
    from pilothouse.store.sqlite import SQLiteRunStore
    from pilothouse.tui.feed import LEASE_CHECK_S

    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    now = [1000.0]
    feed = Feed(tmp_path / "runs.db", clock=lambda: now[0])
    store = SQLiteRunStore(tmp_path / "runs.db", owner=f"{HOST}:{runner.pid}:x")
    try:
        started = RunStarted(run_id="r1", seq=1, ts=1.0, crew="c", input="x", flow="sequential")
        store.write([log_entry(started)])
        feed.poll()
        feed.poll()
        assert (feed.runs["r1"].shown_status, feed.runs["r1"].stalled) == ("running", False)
        runner.kill()
        runner.wait(timeout=30)
        assert not feed.poll().runs  # not read again before LEASE_CHECK_S
        now[0] += LEASE_CHECK_S
        changes = feed.poll()
        assert [r.id for r in changes.runs] == ["r1"] and feed.runs["r1"].shown_status == "stalled"
        assert not feed.poll().runs  # read again later, unchanged: nothing to redraw
        assert [r.id for r in feed.visible(RunFilter.parse("status:stalled"))] == ["r1"]
    finally:
        runner.kill()
        store.close()
        feed.close()


def test_a_closed_feed_opens_no_store_again(tmp_path):
    """A poll still on its way when the monitor closes must not open a store that
    nobody will close (a leaked connection on PostgreSQL)."""
    from pilothouse.store.sqlite import SQLiteRunStore

    path = tmp_path / "runs.db"
    SQLiteRunStore(path).close()  # a store to open
    feed = Feed(path)
    feed.poll()
    assert feed.store is not None
    feed.close()
    assert feed.store is None
    late = feed.fetch()  # after the close: nothing opened
    assert late.store is None and late.problem
    opened = Feed(path).fetch()  # a fetch that opened a store just before the close...
    feed.apply(opened)  # ...applied after it: the store it brought is closed, not kept
    assert feed.store is None and opened.store is not None
    with pytest.raises(Exception, match="closed"):
        opened.store.list_runs()
