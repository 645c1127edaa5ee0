"""The operator's text view tells the truth: `migrate status` and `adopt --watch` render the
admin report (pure functions, tested on report dicts), and replicas report a change as soon as
they apply it (a real gateway pair on the test database)."""

from __future__ import annotations

import asyncio

from gateway.commands.status_view import bar, format_adoption, format_circuit, format_status, next_step
from gateway.config import load_settings
from tests.helpers import TOKEN, StallWatch, admin, seed, status


def report(**overrides) -> dict:
    base = {
        "name": "docs",
        "phase": "shadow",
        "read_model": "old",
        "write_models": ["old", "new"],
        "from_model": "old",
        "to_model": "new",
        "state_version": 7,
        "models": {
            "old": {"rows": 10, "coverage": 1.0, "missing": 0, "stale": 0, "index_ready": True, "verified": True},
            "new": {"rows": 10, "coverage": 1.0, "missing": 0, "stale": 0, "index_ready": True, "verified": True},
        },
        "backfill": {"model": "new", "state": "done", "done": 10, "total": 10, "errors": 0, "rate_per_s": 0.0},
        "shadow": {"model": "new", "sample_rate": 0.1},
        "shadow_metrics": None,
        "replicas": [],
        "adoption": None,
    }
    return {**base, **overrides}


def summary(mean: float) -> dict:
    return {"mean": mean, "p10": mean, "p50": mean}


def test_status_shows_the_shadow_metrics_with_their_noise_floor_and_latency():
    metrics = {
        "samples": 42,
        "dropped": 1,
        "overlap_at_k": summary(0.61),
        "rbo": summary(0.7),
        "kendall_tau": summary(0.5),
        "latency_ms": {"read": summary(3.0), "shadow": summary(4.5)},
        "noise_floor": {"samples": 9, "overlap_at_k": summary(0.98)},
        "recommendation": "new model agrees 61% @k",
    }
    text = format_status(report(shadow_metrics=metrics))
    assert "42 samples (1 dropped), overlap@k 0.61, RBO 0.70, Kendall tau 0.50" in text
    assert "A/A noise floor overlap@k 0.98" in text and "shadow 4.5 ms" in text
    assert "no samples yet" in format_status(report(shadow_metrics={"samples": 0}))


def test_next_step_in_shadow_with_the_shadow_on_does_not_suggest_turning_it_on():
    assert "optionally shadow" not in next_step(report())
    assert next_step(report()).endswith("driftgate migrate cutover docs")
    off = report(phase="ready", shadow={"model": None, "sample_rate": 0.0})
    assert "optionally shadow first" in next_step(off)


def test_an_adoption_of_unknown_size_draws_an_empty_bar_not_a_full_one():
    assert bar(0, 0) == bar(0, None) == "|" + " " * 30 + "|"
    line = format_adoption(
        {
            "state": "importing",
            "rows_read": 0,
            "rows_total": 0,
            "table": "public.items",
            "rows_skipped": 0,
            "rows_to_embed": 0,
            "follow": False,
        }
    )
    assert "#" not in line and "█" not in line and "0/? rows" in line


def test_an_adoption_shows_while_it_runs_and_leaves_the_text_status_once_stopped():
    adoption = {
        "state": "following",
        "rows_read": 5,
        "rows_total": 5,
        "table": "public.items",
        "rows_skipped": 0,
        "rows_to_embed": 0,
        "follow": True,
    }
    assert "adoption following" in format_status(report(adoption=adoption))
    assert "adoption" not in format_status(report(adoption={**adoption, "state": "stopped"}))


def test_an_open_circuit_says_since_when_why_and_that_writes_fail():
    text = format_circuit({"state": "open", "open_for_s": 12.4, "last_error": "HTTP 503"})
    assert text.startswith("open for 12s (last error: HTTP 503)") and "writes" in text
    assert format_circuit({"state": "closed", "open_for_s": None, "last_error": "HTTP 503"}) == "closed"
    models = report()["models"]
    models["new"]["circuit"] = {"state": "half_open", "open_for_s": 3.0, "last_error": "timed out"}
    assert "provider circuit: half_open for 3s (last error: timed out)" in format_status(report(models=models))


async def test_replicas_report_an_announced_change_at_once_not_at_their_next_poll(make_client):
    # a 60 s poll: only the NOTIFY path can make both replicas show the new state_version soon
    settings = load_settings(None, database={"pool_min": 1, "pool_max": 4}, server={"sync_poll_interval_s": 60})
    first = await make_client(settings, admin_token=TOKEN)
    second = await make_client(settings, admin_token=TOKEN)
    await seed(first, n=4)
    code, body = await admin(first, "POST", "shadow", {"model": None, "sample_rate": 0.0, "noise_floor_rate": 0.5})
    assert code == 200, body
    watch = StallWatch(stall_s=30)
    while True:
        current = await status(second)
        applied = {r["id"]: r["applied_state_version"] for r in current["replicas"]}
        if len(applied) == 2 and set(applied.values()) == {current["state_version"]}:
            break
        watch.check(tuple(sorted(applied.items())), f"replicas never reported: {current['replicas']}")
        await asyncio.sleep(0.1)
