#!/usr/bin/env python
"""Benchmark: a bulk load (POST /v1/collections/{c}/documents:bulk, NDJSON) against PostgreSQL's floor.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

The gateway side: --docs Vaswani documents (copies past the corpus) streamed as one NDJSON body
to a new collection on the real app in this process (bench/_gateway.py) with the trivial hash
encoder (bench/_fake_encoder.py), `?index=later`, so the load and the index build are timed
apart; then POST /admin/v1/collections/{c}/index builds the HNSW index (CONCURRENTLY, the
backfill's settings). The floor, in the same run and on the same server: the same rows (id,
text, metadata, the same vectors from the same encoder) COPYed into one bare table, then
CREATE INDEX ... USING hnsw with the same maintenance_work_mem and parallel workers. No tool
can load and index these rows faster on this machine than the floor.

    python bench/bulk_load.py --docs 20000 --repeats 3 > bench/results/bench-bulk-load.json

With --model KEY the load embeds with a real catalog model instead, and the same run times the
bare encoder (the gateway's OnnxEncoder, nothing else) on the same texts in the same chunks;
the figure is the load's docs/s over the bare encoder's:

    python bench/bulk_load.py --model all-MiniLM-L6-v2 --docs 5000 --repeats 3 > bench/results/bench-bulk-load-model.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _backfill import COLLECTION, DOCUMENTS, FAKE_ENCODER, FROM_MODEL, documents
from _common import CpuMeter, busy_cores, emit, load_average, log, machine_info, setup_logging
from _db import Databases, against_floor, copy_index_floor, on_server
from _fake_encoder import HashEncoder, fake_loader
from _gateway import Gateway

from gateway.api.keys import EMBEDDINGS
from gateway.config import load_settings
from gateway.encoders.base import prefixed
from gateway.encoders.catalog import CATALOG, ModelSpec
from gateway.encoders.fetch import ensure_files
from gateway.encoders.local import bulk_pieces, lower_thread_priority
from gateway.encoders.onnx import OnnxEncoder

LOAD_TARGET_DOCS_PER_S = 10_000.0
MODEL_RATIO_TARGET = 0.8  # with --model: the load at >= 0.8x the bare encoder's docs/s
FLOOR_RATIO_TARGET = 1.2  # load + index within 1.2x the floor's time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20_000, help="documents to load")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side, each on a fresh database")
    parser.add_argument(
        "--model",
        default=None,
        help="a catalog model (e.g. all-MiniLM-L6-v2): the load embeds with it, and the bare encoder is timed "
        "on the same texts in the same run (the figure: load docs/s over bare docs/s); unset: the trivial "
        "hash encoder against PostgreSQL's floor",
    )
    parser.add_argument(
        "--bulk-lanes",
        type=int,
        default=os.cpu_count() or 2,
        help="with --model: the gateway's models.bulk_lanes (one-threaded sessions, one chunk each); default: "
        "the machine's cores",
    )
    parser.add_argument("--verbose", action="store_true", help="gateway INFO logs to stderr")
    args = parser.parse_args(argv)
    if min(args.docs, args.repeats, args.bulk_lanes) < 1:
        parser.error("--docs, --repeats and --bulk-lanes must be positive")
    if args.model is not None and args.model not in CATALOG:
        parser.error(f"--model must be a catalog model: {', '.join(sorted(CATALOG))}")
    return args


def ndjson(docs: list[tuple[str, str]]) -> bytes:
    """The body, serialised before the clock starts (the client's cost is not the gateway's)."""
    return b"".join(json.dumps({"id": i, "text": t}).encode() + b"\n" for i, t in docs)


async def create_collection(gw: Gateway, model: str) -> None:
    status, answer = await gw.call("PUT", f"/v1/collections/{COLLECTION}", {"model": model})
    if status not in (200, 201):
        raise RuntimeError(f"creating the collection: {status} {answer}")


async def post_bulk(gw: Gateway, body: bytes, count: int) -> None:
    """Stream `body` to documents:bulk?index=later and check every document was loaded."""
    url = f"{gw.base}/v1/collections/{COLLECTION}/documents:bulk?index=later"
    async with gw.session.post(url, data=body, headers={"Content-Type": "application/x-ndjson"}) as resp:
        answer = await resp.json()
        if resp.status != 200 or answer["loaded"] != count:
            raise RuntimeError(f"bulk load answered {resp.status}: {answer}")


async def gateway_run(databases: Databases, body: bytes, count: int, pg_pid, label: str) -> dict:
    db = await databases.create_or_exit("bench_bulk")
    await databases.checkpoint()
    settings = load_settings(None, backfill={"enabled": False}, server={"sync_poll_interval_s": 1.0})
    try:
        async with Gateway(settings, databases.dsn(db), loader=fake_loader, timeout_s=3600) as gw:
            await create_collection(gw, FROM_MODEL)
            with CpuMeter(pg_pid) as meter:
                started = time.perf_counter()
                await post_bulk(gw, body, count)
                load_s = time.perf_counter() - started
                built = await gw.admin("POST", COLLECTION, "index")
                total_s = time.perf_counter() - started
            if built != {"built": [FROM_MODEL]}:
                raise RuntimeError(f"index build answered {built}")
    finally:
        await databases.drop(db)
    result = {
        "load_s": round(load_s, 3),
        "index_s": round(total_s - load_s, 3),
        "total_s": round(total_s, 3),
        "load_docs_per_s": round(count / load_s, 1),
        "docs_per_s": round(count / total_s, 1),
        "cpu": meter.summary(),
    }
    log(f"  gateway {label}: load {result['load_docs_per_s']} docs/s, with the index {result['docs_per_s']} docs/s")
    return result


async def floor_run(databases: Databases, docs: list[tuple[str, str]], pg_pid, label: str) -> dict:
    """COPY the same rows into one bare table, then build the same index: PostgreSQL's own floor."""
    spec = CATALOG[FROM_MODEL]
    vectors = HashEncoder(spec.dim).encode([t for _, t in docs]).vectors  # as the gateway's encoder makes them
    records = [(i, t, "{}", v) for (i, t), v in zip(docs, vectors, strict=True)]
    columns = (
        f"id text PRIMARY KEY, content text NOT NULL, metadata jsonb NOT NULL, embedding vector({spec.dim}) NOT NULL"
    )
    result = await copy_index_floor(
        databases, columns, records, pg_pid, memory_mb=load_settings(None).backfill.index_memory_mb
    )
    log(f"  floor {label}: COPY {result['copy_docs_per_s']} docs/s, with the index {result['docs_per_s']} docs/s")
    return result


# -- with a real model: the load against the bare encoder --------------------------------------


def model_settings(args: argparse.Namespace):
    return load_settings(
        None,
        backfill={"enabled": False},
        models={"bulk_lanes": args.bulk_lanes},
        server={"sync_poll_interval_s": 1.0},
    )


class BareEncoder:
    """The gateway's own encoder class (OnnxEncoder) on the same texts in the same chunks, with nothing
    else: `one_session` one session on every core (onnxruntime's intra-op threads), `lanes` one
    one-threaded session on as many threads as the gateway has bulk lanes, each chunk cut into
    one piece per lane as the gateway cuts it. Every thread runs at
    the bulk lanes' lowered priority, so other work on the machine weighs on both sides alike; the
    faster of the two is the figure's floor."""

    def __init__(self, spec: ModelSpec, cache_dir: Path, lanes: int) -> None:
        self.spec = spec
        self.lanes = lanes
        self.pool = ThreadPoolExecutor(max_workers=lanes, initializer=lower_thread_priority)
        # sessions made on the lowered threads: onnxruntime's own threads inherit the priority
        self.every_core = self.pool.submit(OnnxEncoder, spec, cache_dir, 0).result()
        self.one_thread = self.pool.submit(OnnxEncoder, spec, cache_dir, 1).result()

    def run(self, texts: list[str], chunk: int, pg_pid, label: str) -> dict:
        chunks = [prefixed(self.spec, texts[i : i + chunk], "document") for i in range(0, len(texts), chunk)]
        # the lanes as the gateway uses them: every chunk cut into one piece per lane
        pieces = [c[a:b] for c in chunks for a, b in bulk_pieces(len(c), self.lanes, self.spec.max_batch)]
        result: dict = {}
        for name, encoder, workers in (("one_session", self.every_core, 1), ("lanes", self.one_thread, self.lanes)):
            with CpuMeter(pg_pid) as meter:
                started = time.perf_counter()
                if workers == 1:
                    for texts_ in chunks:
                        self.pool.submit(encoder.encode, texts_).result()
                else:
                    list(self.pool.map(encoder.encode, pieces))
                seconds = time.perf_counter() - started
            result[name] = {
                "s": round(seconds, 3),
                "docs_per_s": round(len(texts) / seconds, 1),
                "cpu": meter.summary(),
            }
        result["best_docs_per_s"] = max(result["one_session"]["docs_per_s"], result["lanes"]["docs_per_s"])
        log(
            f"  bare encoder {label}: one session {result['one_session']['docs_per_s']} docs/s, "
            f"{self.lanes} lanes {result['lanes']['docs_per_s']} docs/s"
        )
        return result


async def model_gateway_run(databases: Databases, body: bytes, count: int, args, pg_pid, label: str) -> dict:
    """The load through the API with the real model, the index left for later (the encoder's part)."""
    db = await databases.create_or_exit("bench_bulk")
    await databases.checkpoint()
    try:
        async with Gateway(model_settings(args), databases.dsn(db), timeout_s=3600) as gw:
            await create_collection(gw, args.model)
            await gw.app[EMBEDDINGS].embed(args.model, ["warm up"], "document", bulk=True)  # the bulk session
            with CpuMeter(pg_pid) as meter:
                started = time.perf_counter()
                await post_bulk(gw, body, count)
                load_s = time.perf_counter() - started
    finally:
        await databases.drop(db)
    result = {"load_s": round(load_s, 3), "load_docs_per_s": round(count / load_s, 1), "cpu": meter.summary()}
    log(f"  gateway {label}: load {result['load_docs_per_s']} docs/s")
    return result


def main_model(args: argparse.Namespace, docs: list[tuple[str, str]], body: bytes) -> int:
    spec = CATALOG[args.model]
    settings = model_settings(args)
    ensure_files([spec], settings.model_cache_dir())
    bare = BareEncoder(spec, settings.model_cache_dir(), args.bulk_lanes)
    texts = [t for _, t in docs]
    chunk = settings.limits.max_batch_documents
    load_before, busy_before = load_average(), busy_cores(2.0)
    log(f"machine busy before the start: {busy_before} cores (load average {load_before})")

    async def measure(databases: Databases, pg_pid: int | None) -> tuple[list[dict], list[dict]]:
        gateway_runs, bare_runs = [], []
        for r in range(args.repeats):  # interleaved, so a change in the machine's load hits both sides
            label = f"run {r + 1}/{args.repeats}"
            loop = asyncio.get_running_loop()
            bare_runs.append(await loop.run_in_executor(None, bare.run, texts, chunk, pg_pid, label))
            gateway_runs.append(await model_gateway_run(databases, body, len(docs), args, pg_pid, label))
        return gateway_runs, bare_runs

    (gateway_runs, bare_runs), facts, kind = on_server(measure)
    load = statistics.median(r["load_docs_per_s"] for r in gateway_runs)
    floor = statistics.median(r["best_docs_per_s"] for r in bare_runs)
    # CPU seconds of this process per run: what the load costs over the encoder, whatever else runs
    bare_cpu = statistics.median(min(r[k]["cpu"]["own_cpu_s"] for k in ("one_session", "lanes")) for r in bare_runs)
    load_cpu = statistics.median(r["cpu"]["own_cpu_s"] for r in gateway_runs)
    emit(
        {
            "benchmark": "bulk_load_model",
            "machine": machine_info(),
            "config": {
                "docs": len(docs),
                "repeats": args.repeats,
                "model": args.model,
                "bulk_lanes": args.bulk_lanes,
                "chunk_documents": chunk,
                "documents": DOCUMENTS,
                "database": kind,
                "server": facts,
            },
            "median_load_docs_per_s": load,
            "median_bare_encoder_docs_per_s": floor,
            "ratio_to_bare_encoder": round(load / floor, 3),
            "ratio_target": MODEL_RATIO_TARGET,
            "ratio_target_met": load / floor >= MODEL_RATIO_TARGET,
            "median_bare_encoder_cpu_s": bare_cpu,
            "median_load_cpu_s": load_cpu,
            "cpu_ratio": round(bare_cpu / load_cpu, 3),
            "gateway_runs": gateway_runs,
            "bare_runs": bare_runs,
            "load_average_before": load_before,
            "machine_busy_cores_before_start": busy_before,
            "notes": [
                "gateway: from the first byte of the POST (?index=later, the body one NDJSON stream serialised "
                "beforehand) to its answer, all chunks committed; the model's sessions are loaded before the clock",
                "bare encoder: gateway.encoders.onnx.OnnxEncoder.encode on the same texts (with the model's "
                "document prefix) in chunks of limits.max_batch_documents, nothing else; the faster of one "
                "session on every core and --bulk-lanes one-threaded sessions in parallel; its threads run at "
                "the bulk lanes' priority (nice +5), as the gateway's bulk encodes do",
                "ratio_to_bare_encoder = median gateway load docs/s / median best bare docs/s (>= 0.8 is the goal); "
                "cpu_ratio = the bare encoder's CPU seconds (the cheaper arrangement) / the load's, both of this "
                "process (the database's apart): the same comparison, less sensitive to a busy machine",
            ],
        }
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    docs = documents(args.docs)
    body = ndjson(docs)
    if args.model is not None:
        return main_model(args, docs, body)
    load_before, busy_before = load_average(), busy_cores(2.0)
    log(f"machine busy before the start: {busy_before} cores (load average {load_before})")

    async def measure(databases: Databases, pg_pid: int | None) -> tuple[list[dict], list[dict]]:
        gateway_runs, floor_runs = [], []
        for r in range(args.repeats):  # interleaved, so a change in the machine's load hits both sides
            label = f"run {r + 1}/{args.repeats}"
            gateway_runs.append(await gateway_run(databases, body, len(docs), pg_pid, label))
            floor_runs.append(await floor_run(databases, docs, pg_pid, label))
        return gateway_runs, floor_runs

    (gateway_runs, floor_runs), facts, kind = on_server(measure)
    load = statistics.median(r["load_docs_per_s"] for r in gateway_runs)
    total = statistics.median(r["total_s"] for r in gateway_runs)
    floor = statistics.median(r["total_s"] for r in floor_runs)
    emit(
        {
            "benchmark": "bulk_load",
            "machine": machine_info(),
            "config": {
                "docs": len(docs),
                "repeats": args.repeats,
                "model": FROM_MODEL,
                "documents": DOCUMENTS,
                "fake_encoder": FAKE_ENCODER,
                "database": kind,
                "server": facts,
            },
            "median_load_docs_per_s": load,
            "load_target_docs_per_s": LOAD_TARGET_DOCS_PER_S,
            "load_target_met": load >= LOAD_TARGET_DOCS_PER_S,
            "median_total_s": total,
            "median_floor_total_s": floor,
            "ratio_to_floor": round(total / floor, 3),
            "ratio_target": FLOOR_RATIO_TARGET,
            "ratio_target_met": total / floor <= FLOOR_RATIO_TARGET,
            "against_floor": against_floor([(r["load_s"], r["index_s"]) for r in gateway_runs], floor_runs),
            "gateway_runs": gateway_runs,
            "floor_runs": floor_runs,
            "load_average_before": load_before,
            "machine_busy_cores_before_start": busy_before,
            "notes": [
                "gateway: load_s from the first byte of the POST to its answer (all chunks committed), "
                "index_s the admin index build after it; the body is one NDJSON stream serialised beforehand",
                "floor: the same rows and vectors COPYed into one bare table, then CREATE INDEX USING hnsw "
                "with the same maintenance_work_mem (the server's parallel maintenance workers on both sides)",
                "ratio_to_floor = gateway total_s / floor total_s (medians); cpu.other_processes_cores > 0.1 "
                "means something else used the CPU at the same time",
            ],
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
