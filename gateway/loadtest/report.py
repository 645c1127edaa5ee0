"""What the load test proves: failures per phase, lost writes, resurrected deletes, latency."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from gateway.domain.latency import percentile
from gateway.loadtest.generator import Ledger, Sample
from gateway.loadtest.scenario import Timeline


def failed(sample: Sample) -> bool:
    """A failure the client saw: a 5xx or a connection error on the final attempt."""
    return sample.status == 0 or sample.status >= 500


def latency_summary(samples: list[Sample]) -> dict[str, float]:
    latencies = sorted(s.latency_ms for s in samples)
    return {q: round(percentile(latencies, v), 2) for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}


def per_phase(samples: list[Sample], duration: dict[str, float]) -> dict:
    """Per phase: requests, failures, throughput, latency, and the same per operation."""
    by_phase: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_phase[s.phase].append(s)
    out = {}
    for phase, group in by_phase.items():
        by_op: dict[str, list[Sample]] = defaultdict(list)
        for s in group:
            by_op[s.op].append(s)
        out[phase] = {
            "requests": len(group),
            "failed_requests": sum(failed(s) for s in group),
            "retried_ok": sum(s.attempts > 1 and not failed(s) for s in group),
            "client_errors": sum(400 <= s.status < 500 and not (s.op == "delete" and s.status == 404) for s in group),
            "throughput_rps": round(len(group) / max(duration.get(phase, 1.0), 1e-9), 1),
            "latency_ms": latency_summary(group),
            "by_op": {
                op: {
                    "requests": len(ops),
                    "failed_requests": sum(failed(s) for s in ops),
                    "latency_ms": latency_summary(ops),
                }
                for op, ops in sorted(by_op.items())
            },
            "read_models": sorted({s.model for s in group if s.op == "query" and s.model}),
        }
    return out


async def check_final_state(client, collection: str, ledger: Ledger, seeds: dict[str, int]) -> dict:
    """Read every tracked document back through the API (`documents:get`, through the client) and
    compare with what was acknowledged."""
    expected: dict[str, tuple[str, int]] = {doc_id: ("write", v) for doc_id, v in seeds.items()}
    expected.update(ledger.last)
    checked = [doc_id for doc_id in expected if doc_id not in ledger.uncertain]
    found = {doc.id: doc.version for doc in await client.get_documents(collection, checked)}
    lost, resurrected = [], []
    for doc_id in checked:
        kind, version = expected[doc_id]
        if kind == "delete":
            if doc_id in found:
                resurrected.append(doc_id)
        elif found.get(doc_id, -1) < version:
            lost.append(doc_id)
    return {"checked": len(checked), "lost": lost, "resurrected": resurrected}


def timeline_plot(samples: list[Sample], timeline: Timeline, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        buckets[int(s.at)].append(s)
    seconds = sorted(buckets)
    p50 = [percentile(sorted(x.latency_ms for x in buckets[t]), 0.5) for t in seconds]
    p99 = [percentile(sorted(x.latency_ms for x in buckets[t]), 0.99) for t in seconds]
    rps = [len(buckets[t]) for t in seconds]
    errors = [sum(failed(x) for x in buckets[t]) for t in seconds]

    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(10, 7.5), dpi=100, sharex=True)
    ax1.plot(seconds, p50, label="p50", lw=1.2)
    ax1.plot(seconds, p99, label="p99", lw=1.2)
    ax1.set_ylabel("latency (ms)")
    ax1.set_yscale("log")
    ax1.legend(loc="lower left", fontsize=7)
    ax2.bar(seconds, rps, width=1.0, color="tab:green", label="requests/s")
    ax2.bar(seconds, errors, width=1.0, color="tab:red", label="failed/s")
    ax2.set_ylabel("requests / s")
    ax2.legend(loc="lower left", fontsize=7)
    total_failed = sum(errors)
    # above the panel, not on it: over the bars it was clipped and green on green
    ax2.set_title(
        f"{total_failed} failed requests",
        loc="right",
        fontsize=9,
        fontweight="bold",
        color="tab:red" if total_failed else "darkgreen",
    )
    if timeline.progress:
        ax3.plot(
            [p[0] for p in timeline.progress],
            [100 * p[1] / p[2] if p[2] else 0 for p in timeline.progress],
            color="tab:purple",
        )
    ax3.set_ylabel("backfill %")
    ax3.set_xlabel("seconds")
    ax3.set_ylim(0, 105)
    for ax in (ax1, ax2, ax3):
        for at, _phase in timeline.phases:
            ax.axvline(at, color="grey", ls="--", lw=0.8)
        for at, _event in timeline.events:
            ax.axvline(at, color="red", ls=":", lw=1.2)
    for at, phase in timeline.phases:
        ax1.annotate(phase, (at, 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=7, va="top", ha="right")
    for at, event in timeline.events:
        ax2.annotate(
            event,
            (at, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            ha="right",
            color="red",
        )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
