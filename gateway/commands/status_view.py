"""The text view of a collection's status report (`migrate status`, `adopt --watch`).

Pure functions of the admin API's JSON: what the operator reads, and what to do next. The
console renders the same report; the facts shown here (progress, rate, circuit, shadow
metrics, replicas) must agree with it.
"""

from __future__ import annotations

from tqdm import tqdm

# a stopped adoption is history: the JSON report keeps it, the text does not
ADOPTION_SHOWN = ("importing", "indexing", "following", "done", "failed")
# a replica that reported within this many seconds is only catching up, not behind
RECENT_S = 5.0


def bar(done: int, total: int | None, width: int = 32) -> str:
    """A progress bar; an unknown or zero total draws an empty bar, never a full one."""
    if not total:
        return "|" + " " * (width - 2) + "|"
    return tqdm.format_meter(min(done, total), total, 0, ncols=width, bar_format="|{bar}|")


def format_status(status: dict) -> str:
    lines = [
        f"collection {status['name']}: phase {status['phase']}, reads {status['read_model']}, "
        f"writes {', '.join(status['write_models'])} (state_version {status['state_version']})",
    ]
    for key, model in status["models"].items():
        flags = [
            f"{model['coverage']:.2%} covered",
            f"{model['missing']} missing",
            f"{model['stale']} stale",
            "index ready" if model["index_ready"] else "index not built",
            "verified" if model["verified"] else "not verified",
        ]
        if model.get("storage", "vector") != "vector":
            flags.append(f"stored as {model['storage']}")
        if model.get("execution_provider"):  # a gateway older than the setting leaves it out
            flags.append(f"runs on {model['execution_provider']}")
        lines.append(f"  {key:<24} {model['rows']:>9} rows  " + ", ".join(flags))
        if model.get("circuit"):
            lines.append(f"  {'':<24} provider circuit: {format_circuit(model['circuit'])}")
    backfill = status["backfill"]
    if backfill.get("model"):
        lines.append("  " + format_backfill(backfill))
        if backfill.get("index_build"):
            build = backfill["index_build"]
            lines.append(f"  index build: {build['phase']} ({build['blocks_done']}/{build['blocks_total']} blocks)")
    if status.get("adoption") and status["adoption"]["state"] in ADOPTION_SHOWN:
        lines.append(format_adoption(status["adoption"]))
    shadow = status["shadow"]
    if shadow.get("model"):
        lines.append(f"  shadow {shadow['model']} at {shadow['sample_rate']:.0%}")
        lines.extend("  " + line for line in format_shadow_metrics(status.get("shadow_metrics")))
    current = status["state_version"]
    for replica in status["replicas"]:
        lines.append(f"  replica {replica['id']:<32} " + format_replica(replica, current))
    lines.append("  next: " + next_step(status))
    return "\n".join(lines)


def format_circuit(circuit: dict | str) -> str:
    """`open for 12s (last error: HTTP 503)`; a bare state string from an older gateway as it is."""
    if isinstance(circuit, str):
        return circuit
    text = circuit["state"]
    if circuit.get("open_for_s") is not None:
        text += f" for {circuit['open_for_s']:.0f}s"
    if circuit.get("last_error") and circuit["state"] != "closed":
        text += f" (last error: {circuit['last_error']})"
    if circuit["state"] != "closed":
        text += "; writes to collections dual-writing this model fail until it closes"
    return text


def format_backfill(backfill: dict) -> str:
    """One line: state, bar, counts, and a rate and ETA only while documents are moving."""
    done, total = backfill["done"], backfill["total"]
    line = f"backfill {backfill['state']:<8} {bar(done, total)} {done}/{total}"
    if backfill["state"] == "running" and done < total:
        eta = f"{backfill['eta_s']:.0f}s" if backfill.get("eta_s") is not None else "?"
        cap = f" (max {backfill['max_rate']:.0f}/s)" if backfill.get("max_rate") else ""
        line += f" {backfill['rate_per_s']:.0f}/s{cap} eta {eta}"
    return line + f", errors {backfill['errors']}"


def format_shadow_metrics(metrics: dict | None) -> list[str]:
    """The shadow comparison in two lines: agreement with its A/A noise floor, and latency."""
    if not metrics or not metrics.get("samples"):
        return ["shadow metrics: no samples yet (they come with read traffic)"]
    floor = metrics.get("noise_floor") or {}
    lines = [
        f"shadow metrics: {metrics['samples']} samples ({metrics.get('dropped', 0)} dropped), "
        f"overlap@k {metrics['overlap_at_k']['mean']:.2f}, RBO {metrics['rbo']['mean']:.2f}"
        + (f", Kendall tau {metrics['kendall_tau']['mean']:.2f}" if metrics.get("kendall_tau") else "")
        + (
            f"; A/A noise floor overlap@k {floor['overlap_at_k']['mean']:.2f}"
            if floor.get("samples") and floor.get("overlap_at_k")
            else ""
        )
    ]
    latency = metrics.get("latency_ms") or {}
    if latency.get("read") and latency.get("shadow"):
        lines.append(f"  latency p50 read {latency['read']['p50']:.1f} ms, shadow {latency['shadow']['p50']:.1f} ms")
    if metrics.get("recommendation"):
        lines.append(f"  {metrics['recommendation']}")
    return lines


def format_adoption(adoption: dict) -> str:
    """One status line: state, progress bar of rows read, skipped/embedded counts, follow lag."""
    line = (
        f"  adoption {adoption['state']} {bar(adoption['rows_read'], adoption['rows_total'], 32)} "
        f"{adoption['rows_read']}/{adoption['rows_total'] or '?'} rows from {adoption['table']}, "
        f"{adoption['rows_skipped']} skipped (no text), {adoption['rows_to_embed']} to embed"
    )
    lag = adoption.get("follow_lag")
    if adoption["follow"] and lag:
        line += f"; following: {lag['pending']} pending, lag {lag['lag_s']:.1f}s, {adoption['changes_applied']} applied"
    if adoption.get("vectors_unusable"):
        line += f"; {adoption['vectors_unusable']} stored vectors unusable (zero or wrong size), re-embedded"
    if adoption.get("error"):
        line += f"\n  FAILED ({adoption['failures']} in a row, next try {adoption['retry_at']}): {adoption['error']}"
    return line


def format_replica(replica: dict, current: int) -> str:
    """Applied state version, whether it has converged, and how long ago it reported."""
    applied = replica["applied_state_version"]
    if applied == current:
        mark = "ok"
    elif replica.get("seen_s_ago", 0.0) < RECENT_S:
        mark = f"converging (state_version {current} announced, applies within a poll interval)"
    else:
        mark = "BEHIND (not converged; is it running and connected to the database?)"
    return f"applied {applied} {mark}, seen {replica.get('seen_s_ago', 0.0):.0f}s ago"


def next_step(status: dict) -> str:
    """What an operator would do next, from the phase and the numbers."""
    name, phase, target = status["name"], status["phase"], status.get("to_model")
    backfill_state = status["backfill"].get("state")
    if backfill_state in ("paused", "failed"):
        why = "paused" if backfill_state == "paused" else "failed for some documents (see errors above)"
        return f"the backfill {why}: driftgate migrate backfill {name} resume"
    if phase == "steady":
        return f"driftgate migrate start {name} --to MODEL"
    if phase == "dual_write":
        return "wait for the backfill (it moves the collection to ready), or `driftgate migrate abort " + name + "`"
    if phase in ("ready", "shadow") and status["read_model"] != target:
        if target and not status["models"].get(target, {}).get("verified"):
            return f"driftgate migrate verify {name}"
        if status["shadow"].get("model"):
            return f"read the shadow metrics above (they fill with traffic), then driftgate migrate cutover {name}"
        return f"driftgate migrate cutover {name} (optionally shadow first: driftgate migrate shadow {name})"
    if phase == "cutover":
        return f"check quality, then driftgate migrate retire {name} (or rollback {name})"
    return f"driftgate migrate status {name}"
