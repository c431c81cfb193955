"""LLM-ops metrics computed from a real run store with known contents."""

from __future__ import annotations

import json
import subprocess
import sys

import anyio
import pytest

import pilothouse
from conftest import crew, text_reply
from pilothouse import Guardrail, ModelError, Verdict
from pilothouse.audits.metrics import compute
from pilothouse.events import log_entry
from pilothouse.portal import Portal
from pilothouse.store.sqlite import SQLiteRunStore
from pilothouse.tui.feed import Feed


class Flag(Guardrail):
    name = "flag_all"

    def check(self, text, context):
        return Verdict(action="flag", reason="check", risk=0.5) if "flag" in text else Verdict.ok()


@pytest.fixture
async def store_with_runs(make_runtime, scripted, workspace):
    """3 'sales' runs (2 ok, 1 model error), 2 'legal' runs with escalations."""
    scripted.guardrails.append(Flag())
    sales = crew({"type": "sequential", "steps": ["a", "b"]}, {"a": {}, "b": {}}, name="sales")
    legal = crew(
        {"type": "sequential", "steps": ["r"]},
        {"r": {"guardrails": {"output": ["flag_all"]}}},
        name="legal",
        escalation={"timeout_s": 0, "on_timeout": "approve"},
    )
    scripted.provider.enqueue(
        text_reply("a1", tokens=(100, 10)), text_reply("b1", tokens=(100, 10)),
        text_reply("a2", tokens=(100, 10)), text_reply("b2", tokens=(100, 10)),
        ModelError("server down"),
        text_reply("flag me", tokens=(50, 5)),  # legal 1: policy approves
        text_reply("flag me too", tokens=(50, 5)),  # legal 2: a person edits
    )  # fmt: skip
    async with make_runtime() as rt:
        for text in ("s1", "s2", "s3"):
            await rt.run(sales, text)
        await rt.run(legal, "l1")
        person = legal.model_copy(update={"escalation": legal.escalation.model_copy(
            update={"timeout_s": None, "on_timeout": "wait"})})  # fmt: skip
        async with anyio.create_task_group() as tg:
            tg.start_soon(rt.run, person, "l2")
            with anyio.fail_after(5):
                while not rt.store.escalations():
                    await anyio.sleep(0.02)
            rt.store.decide(rt.store.escalations()[0].id, "edit", by="ana", text="fixed")
    return workspace


async def test_metrics_by_crew(store_with_runs):
    path = pilothouse.load_settings().store_path
    rows = {m.group: m for m in compute(path, by="crew")}
    sales, legal = rows["sales"], rows["legal"]
    assert (sales.runs, sales.succeeded, sales.failed) == (3, 2, 1)
    assert sales.success_rate == pytest.approx(2 / 3) and sales.error_rate == pytest.approx(1 / 3)
    assert (sales.model_calls, sales.model_errors) == (5, 1)
    assert sales.call_error_rate == pytest.approx(1 / 5)
    assert (sales.input_tokens, sales.output_tokens) == (400, 40)
    assert sales.tokens_per_success == 220
    assert sales.cost_usd == pytest.approx(0.44)  # the scripted model: $0.001 a token
    assert sales.escalation_rate == 0 and sales.override_rate is None
    assert (legal.runs, legal.succeeded, legal.escalations, legal.runs_escalated) == (2, 2, 2, 2)
    assert (legal.human_decisions, legal.human_overrides, legal.override_rate) == (1, 1, 1.0)
    assert sales.latency_p50_ms is not None and sales.latency_p95_ms >= sales.latency_p50_ms


async def test_metrics_by_persona_and_model_and_filters(store_with_runs):
    path = pilothouse.load_settings().store_path
    personas = {m.group: m for m in compute(path, by="persona")}
    assert personas["sales/a"].model_calls == 3 and personas["sales/b"].model_calls == 2
    assert personas["legal/r"].escalations == 2
    models = compute(path, by="model")
    assert [(m.group, m.model_calls) for m in models] == [("scripted:model", 7)]
    only_legal = compute(path, by="crew", crew="legal")
    assert [m.group for m in only_legal] == ["legal"]
    assert compute(path, since=9e12) == []


async def test_cli_metrics_json(store_with_runs):
    command = [sys.executable, "-m", "pilothouse", "metrics"]
    done = subprocess.run([*command, "--json", "--since", "1h"], cwd=store_with_runs,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["group"]: r for r in json.loads(done.stdout)}
    assert rows["sales"]["success_rate"] == pytest.approx(2 / 3)
    assert rows["legal"]["override_rate"] == 1.0
    assert rows["sales"]["call_error_rate"] == pytest.approx(1 / 5)
    table = subprocess.run([*command, "--by", "model"], cwd=store_with_runs,
                           capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    assert table.split("\n")[0].split()[:8] == [
        "model", "runs", "ok", "err", "esc", "ovr", "calls", "c.err"
    ]  # fmt: skip
    assert table.split("\n")[1].split()[:3] == ["scripted:model", "-", "-"]
    assert table.split("\n")[1].split()[6:8] == ["7", "14%"]  # 1 of 7 calls failed
    (store_with_runs / "pilothouse.toml").write_text(
        "[budgets.sales]\ncost_usd_per_day = 0.1\n[budgets.legal]\ntokens_per_day = 1000\n"
    )
    alerted = subprocess.run(command, cwd=store_with_runs, capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert "budget alert: crew 'sales' spent $0.4400 today, over its budget of $0.1000" in (
        alerted.stderr
    )
    assert "'legal'" not in alerted.stderr  # 110 tokens, under 1000
    bad = subprocess.run([*command, "--since", "yesterday"], cwd=store_with_runs,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "use 7d, 12h, 30m or a date" in bad.stderr


async def test_the_monitor_and_the_portal_show_the_metrics_numbers(store_with_runs):
    """One definition of each rate: the CLI's numbers are the TUI header's and the portal's."""
    path = pilothouse.load_settings().store_path
    rows = compute(path, by="crew")
    runs = sum(m.runs for m in rows)
    finished = sum(m.finished for m in rows)
    tokens = sum(m.input_tokens + m.output_tokens for m in rows)

    feed = Feed(path)
    feed.poll()
    header = feed.stats(3600)
    feed.close()
    assert header.runs == runs
    assert header.rate("succeeded") == pytest.approx(sum(m.succeeded for m in rows) / finished)
    assert header.rate("failed") == pytest.approx(sum(m.failed for m in rows) / finished)
    assert header.escalation_rate == pytest.approx(sum(m.runs_escalated for m in rows) / runs)
    assert header.tokens == tokens
    assert header.cost_usd == pytest.approx(sum(m.cost_usd for m in rows))

    pytest.importorskip("mkdocs", reason="the portal is the [portal] extra")
    store = SQLiteRunStore(path)
    try:
        Portal(store, store_with_runs / "portal").generate()
    finally:
        store.close()
    home = (store_with_runs / "portal" / "docs" / "index.md").read_text()
    legal = next(m for m in rows if m.group == "legal")
    sales = next(m for m in rows if m.group == "sales")
    assert (f"| legal | 2 | 100% | 0% | 100% | 100% | {legal.tokens_per_success:,.0f} |"
            in home)  # fmt: skip
    assert f"| sales | 3 | 67% | 33% | 0% | - | {sales.tokens_per_success:,.0f} |" in home
    assert "| scripted:model | 7 | 14% | 500 | 50 |" in home


async def test_audit_runs_are_left_out_of_the_fleet_numbers(store_with_runs, scripted):
    """An audit's blocked hostile inputs must not show up as the fleet's failures."""
    path = pilothouse.load_settings().store_path
    before = {m.group: m for m in compute(path)}
    scripted.provider.enqueue(ModelError("blocked"), text_reply("ok", tokens=(1, 1)))
    c = crew({"type": "sequential", "steps": ["a"]}, {"a": {}}, name="sales")
    async with pilothouse.Runtime(pilothouse.load_settings(default_model="scripted"),
                                  plugins=[scripted]) as rt:  # fmt: skip
        await rt.run(c, "probe 1", subject="audit:adversarial:x")
        await rt.run(c, "probe 2", subject="audit:bias:y")
        summaries = rt.store.list_runs(crew="sales")
    assert sorted(r.subject or "" for r in summaries)[-2:] == ["audit:adversarial:x",
                                                               "audit:bias:y"]  # fmt: skip
    assert sum(r.audit for r in summaries) == 2
    after = {m.group: m for m in compute(path)}
    assert after["sales"].model_dump() == before["sales"].model_dump()
    with_audits = {m.group: m for m in compute(path, audits=True)}
    assert (with_audits["sales"].runs, with_audits["sales"].failed) == (5, 2)
    feed = Feed(path)
    feed.poll()
    assert feed.stats(3600).runs == sum(m.runs for m in after.values())
    feed.close()


def test_old_stores_get_their_runs_subjects_back(workspace):
    """m008 adds runs.subject and fills it from each run's run_started event."""
    import sqlite3

    from pilothouse.events import RunStarted

    path = workspace / "old.db"
    store = SQLiteRunStore(path)
    started = RunStarted(run_id="r1", seq=1, ts=1.0, crew="c", input="i", flow="sequential",
                         subject="ana")  # fmt: skip
    store.write([log_entry(started)])
    store.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE runs DROP COLUMN subject")  # the store as m007 left it
    db.execute("DELETE FROM _migrations WHERE name = 'm008_run_subject'")
    db.commit()
    db.close()
    store = SQLiteRunStore(path)
    try:
        assert store.get_run("r1").subject == "ana"
    finally:
        store.close()


def test_the_table_shows_long_names_whole(tmp_path):
    persona = "a_persona_with_a_rather_long_name"
    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "reviews.toml").write_text(
        f'[flow]\nsteps = ["{persona}"]\n[personas.{persona}]\n'
    )
    command = [sys.executable, "-m", "pilothouse"]
    ran = subprocess.run([*command, "run", "reviews", "-i", "go"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    table = subprocess.run([*command, "metrics", "--by", "persona"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    header, row = table.split("\n")[:2]
    assert row.split()[0] == f"reviews/{persona}"
    assert header.index("runs") + len("runs") == row.index("-") + 1  # columns line up


def test_every_column_of_metrics_is_explained(tmp_path):
    """The table's short headers (ok, err, esc, ovr, c.err, tok/ok, q p95...) each have a
    line of the legend printed under it."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "pilothouse", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip

    assert cli("demo", "--wait", "0").returncode == 0
    shown = cli("metrics").stdout.splitlines()
    header, legend = shown[0], "\n".join(shown[2:])
    short = [h for h in header.split() if h not in ("crew", "runs", "calls", "tokens", "cost", "$",
                                                    "ms", "q")]  # fmt: skip
    assert short, header
    for name in short:
        assert f"{name}:" in legend or f"{name}," in legend or f", {name}" in legend, name
    assert "q p95:" in legend and "ovr:" in legend and "esc:" in legend
