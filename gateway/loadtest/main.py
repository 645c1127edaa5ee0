"""`driftgate loadtest`: the zero-downtime proof, end to end."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from gateway.client.errors import DriftgateError
from gateway.config import admin_token_from_env
from gateway.datasets import vaswani
from gateway.loadtest.cluster import Cluster
from gateway.loadtest.report import failed, timeline_plot
from gateway.loadtest.runner import LoadPlan, admin_client, migrate_under_load, seed_collection
from gateway.loadtest.scenario import ScenarioError, Timeline

MIX = {"query": 0.7, "insert": 0.12, "update": 0.12, "delete": 0.06}


@dataclass(frozen=True)
class Profile:
    documents: int
    rate: float
    dwell_s: float
    warmup_s: float


SHORT = Profile(documents=2000, rate=20.0, dwell_s=4.0, warmup_s=3.0)
FULL = Profile(documents=6000, rate=30.0, dwell_s=15.0, warmup_s=10.0)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_corpus(path: str | None, documents: int) -> list[tuple[str, str]]:
    """`documents` rows to seed, then up to as many more whose texts the inserts use."""
    if path in (None, "vaswani"):
        return vaswani(limit=2 * documents).corpus
    rows = []
    with open(path, encoding="utf-8") as handle:
        for n, line in enumerate(handle):
            if line.strip():
                item = json.loads(line)
                rows.append((str(item.get("_id", item.get("id", n))), item["text"]))
            if len(rows) >= documents:
                break
    return rows


def run(args) -> int:
    if getattr(args, "config", None) and not args.url:  # the replicas read the same config (remote models, say)
        os.environ["DRIFTGATE_CONFIG"] = os.path.abspath(args.config)
    try:
        report = asyncio.run(_run(args))
    except (ScenarioError, DriftgateError) as exc:
        log(f"driftgate loadtest: the migration failed: {exc}")
        return 1
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
        log(f"report written to {args.json}")
    else:
        print(text)
    log(summary(report))
    return 0 if report["passed"] else 1


def summary(report: dict) -> str:
    verdict = "PASSED" if report["passed"] else "FAILED"
    return (
        f"loadtest {verdict}: {report['requests']} requests, {report['failed_requests']} failed, "
        f"{report['lost_writes']} lost writes, {report['resurrected']} resurrected, final model "
        f"{report['final_model']} covers {report['final_coverage']:.2%} of {report['final_documents']} documents"
    )


async def _run(args) -> dict:
    profile = SHORT if args.short else FULL
    documents = args.documents or profile.documents
    rate = args.rate or profile.rate
    everything = load_corpus(args.corpus, documents)
    corpus, fresh = everything[:documents], [text for _, text in everything[documents:]]
    cluster = None
    if args.url:
        urls = [u.strip().rstrip("/") for u in args.url.split(",") if u.strip()]
        token = admin_token_from_env()
        if not token:
            raise ScenarioError("--url needs DRIFTGATE_ADMIN_TOKEN, the gateways' admin token")
        if args.kill_replica or args.restart_db:
            raise ScenarioError("faults need the cluster this command starts itself (no --url)")
    else:
        token = secrets.token_hex(16)
        cluster = Cluster(2, token)
        log("starting the embedded PostgreSQL and 2 gateway replicas ...")
        await asyncio.to_thread(cluster.start)
        urls = cluster.urls
    collection = f"lt_{secrets.token_hex(4)}"
    report: dict | None = None
    try:
        async with admin_client(urls[-1], token) as client:
            seeds = await seed_collection(client, collection, args.from_model, corpus)
            report = await drive(args, profile, rate, client, urls, collection, corpus, fresh, seeds, cluster)
            return report
    finally:
        if cluster is not None:
            failed = report is None or not report["passed"]  # then the replicas' logs say why: kept
            await asyncio.to_thread(functools.partial(cluster.stop, keep_logs=failed))
            if failed:
                log(f"the replicas' logs are kept in {cluster.work_dir}")


async def drive(args, profile, rate, client, urls, collection, corpus, fresh, seeds, cluster) -> dict:
    faults = bool(args.kill_replica or args.restart_db)
    plan = LoadPlan(
        from_model=args.from_model,
        to_model=args.to_model,
        rate=rate,
        mix=MIX,
        shadow_rate=0.1,
        dwell_s=profile.dwell_s,
        warmup_s=profile.warmup_s,
        retries=8 if faults else 0,
        read_mode=args.read_mode,
    )

    async def fault(timeline: Timeline) -> None:
        if args.kill_replica and cluster is not None:
            victim = cluster.replicas[0]
            timeline.events.append((timeline.now(), f"kill -9 {victim.name}"))
            log(f"fault: kill -9 {victim.name}")
            victim.kill()
            await asyncio.sleep(2)
            await asyncio.to_thread(victim.start)
            timeline.events.append((timeline.now(), f"{victim.name} back"))
        if args.restart_db and cluster is not None:
            timeline.events.append((timeline.now(), "PostgreSQL down"))
            log("fault: restarting PostgreSQL")
            await asyncio.to_thread(cluster.restart_database, 2.0)
            timeline.events.append((timeline.now(), "PostgreSQL up"))

    log(f"open-loop load: {rate:.0f} requests/s over {len(urls)} replicas ({MIX})")
    result = await migrate_under_load(
        client,
        urls,
        collection,
        corpus,
        fresh,
        seeds,
        plan,
        on_phase=lambda phase, at: log(f"[{at:6.1f}s] phase {phase}"),
        fault=fault if faults else None,
    )
    status, state, samples = result.status, result.state, result.samples
    final = status.models.get(args.to_model, {})
    report = {
        "collection": collection,
        "from_model": args.from_model,
        "to_model": args.to_model,
        "replicas": len(urls),
        "offered_rate_rps": rate,
        "duration_s": round(result.timeline.now(), 1),
        "faults": [event for _, event in result.timeline.events],
        "requests": len(samples),
        "failed_requests": result.failed_requests,
        "retried_ok": sum(s.attempts > 1 and not failed(s) for s in samples),
        "failures_by_status": dict(Counter(str(s.status) for s in samples if failed(s))),
        "lost_writes": len(state["lost"]),
        "resurrected": len(state["resurrected"]),
        "lost_ids": state["lost"][:20],
        "resurrected_ids": state["resurrected"][:20],
        "documents_checked": state["checked"],
        "uncertain_documents": result.uncertain,
        "final_model": status.read_model,
        "final_phase": status.phase,
        "final_documents": final.get("rows", 0),
        "final_coverage": final.get("coverage", 0.0),
        "final_missing": final.get("missing"),
        "final_stale": final.get("stale"),
        "phases": result.phases,
        "phase_starts_s": {phase: round(at, 1) for at, phase in result.timeline.phases},
        "read_mode": args.read_mode,
        "adapted_queries": sum(s.op == "query" and "adapted-from=" in (s.model or "") for s in samples),
        "shadow_metrics": {k: status.raw["shadow_metrics"].get(k) for k in ("samples", "overlap_at_k", "rbo")}
        if status.raw.get("shadow_metrics")
        else None,
    }
    report["passed"] = (
        result.passed
        and report["final_model"] == args.to_model
        and report["final_coverage"] == 1.0
        and report["final_phase"] == "steady"
    )
    if args.plot:
        timeline_plot(
            samples,
            result.timeline,
            Path(args.plot),
            f"driftgate loadtest: {args.from_model} -> {args.to_model}, {rate:.0f} req/s, {len(urls)} replicas",
        )
        log(f"timeline written to {args.plot}")
    return report
