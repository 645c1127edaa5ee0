#!/usr/bin/env python
"""Benchmark: backfill throughput with a real model, against that model's bare encoder on the same texts.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

A collection of --docs documents (as backfill_engine.py builds them) migrates from the hash
encoder (from-model) to the real all-MiniLM-L6-v2 ONNX encoder (to-model), with one
BackfillWorker in this process (see --worker). The backfill is compared with the encoder's raw
throughput on the same texts (encoder.encode on the same chunks, in the same order, in the same
process and onnxruntime session). Raw passes and backfills alternate (raw, backfill, raw, ...
--repeats backfills); each backfill is compared with the raw passes around it, so a machine
whose load drifts skews the ratio less. Reports the median ratio, a CPU-time ratio, and what
the gateway handed the encoder (calls, padding).

The database server is a throwaway embedded PostgreSQL + pgvector, or DATABASE_URL when set
(its role must be allowed to create databases).

    python bench/backfill_real_model.py --repeats 2                        # the README's figure (b)
    python bench/backfill_real_model.py --docs 64 --chunk-size 32 --repeats 1   # a quick check

(Formerly `python bench/backfill.py --only b`; --real-docs, --real-chunk-size, --real-pipelines
and --real-repeats are now --docs, --chunk-size, --pipelines and --repeats.)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time

from _backfill import (
    FROM_MODEL,
    TO_MODEL,
    WORKER_CHOICES,
    add_common_args,
    documents,
    load_template,
    run_benchmark,
    timed_backfill,
)
from _common import CpuMeter, log
from _fake_encoder import RECORDERS, RecordingEncoder, partly_fake_loader

from gateway.config import BackfillConfig, load_settings
from gateway.encoders.catalog import CATALOG
from gateway.encoders.onnx import load_encoder

TARGET_RATIO = 0.9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=2000, help="documents in the collection")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=BackfillConfig().chunk_size,
        help="backfill chunk size, and the batch of the raw encoder timing",
    )
    parser.add_argument("--pipelines", type=int, default=BackfillConfig().pipelines, help="pipelines of the worker")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="backfills, each between two raw encoder passes (raw, backfill, raw, ...)",
    )
    add_common_args(parser, worker_choice=True)
    args = parser.parse_args(argv)
    if min(args.docs, args.chunk_size, args.repeats) < 1 or args.timeout <= 0:
        parser.error("--docs, --chunk-size, --repeats and --timeout must be positive")
    if not 1 <= args.pipelines <= 16:
        parser.error("--pipelines is 1 to 16 (the gateway's limit)")
    return args


def raw_encoder_pass(encoder, chunks: list[list[str]]) -> float:
    started = time.perf_counter()
    for texts in chunks:
        encoder.encode(texts)
    return time.perf_counter() - started


async def measure_real(databases, args, pg_pid) -> dict:
    docs = documents(args.docs)
    log(f"real model: loading {len(docs)} documents into a template database ...")
    template, load = await load_template(databases, "bench_tpl_b", docs)
    spec = CATALOG[TO_MODEL]
    # the same texts in the same chunks as the backfill sees them: id byte order, chunk_size per chunk
    ordered = [spec.document_prefix + text for _, text in sorted(docs, key=lambda d: d[0].encode())]
    n = len(ordered)
    chunks = [ordered[i : i + args.chunk_size] for i in range(0, n, args.chunk_size)]
    settings = load_settings(None)  # the app's threads and cache, so raw passes use the app's very session
    threads = settings.models.intra_op_threads
    encoder = load_encoder(spec, settings.model_cache_dir(), threads)
    encoder.encode(chunks[0][:64])  # warm-up
    loop = asyncio.get_running_loop()
    loader = functools.partial(partly_fake_loader, frozenset({TO_MODEL}))

    async def raw_pass(label: str) -> dict:
        recorder = RecordingEncoder(encoder, spec.max_batch)
        with CpuMeter(pg_pid) as meter:
            seconds = await loop.run_in_executor(None, raw_encoder_pass, recorder, chunks)
        log(f"  raw {label}: {n / seconds:.1f} docs/s ({seconds:.1f} s, cpu {meter.summary()})")
        return {
            "seconds": round(seconds, 3),
            "docs_per_s": round(n / seconds, 1),
            "cpu": meter.summary(),
            "encoder_calls": recorder.summary(),
        }

    log(
        f"  raw {TO_MODEL} encode of {n} texts in chunks of {args.chunk_size}, alternating with "
        f"{args.repeats} backfill(s) ..."
    )
    raws = [await raw_pass("pass 1")]
    backfills = []
    for rep in range(args.repeats):
        RECORDERS.clear()
        run = await timed_backfill(
            databases,
            template,
            loader,
            args.chunk_size,
            args.pipelines,
            args,
            pg_pid,
            f"backfill {rep + 1}/{args.repeats}",
            app_worker=args.worker == "app",
        )
        # every call the gateway made to the real encoder, the migration's probe texts included
        run["encoder_calls"] = RECORDERS[TO_MODEL].summary() if TO_MODEL in RECORDERS else None
        log(f"  backfill {rep + 1} encoder calls: {run['encoder_calls']}")
        raws.append(await raw_pass(f"pass {rep + 2}"))
        compare(run, raws[-2], raws[-1], n)
        backfills.append(run)
        log(f"  backfill {rep + 1}: ratio {run['ratio']} (cpu-time ratio {run['cpu_ratio']})")
    ratio = statistics.median(r["ratio"] for r in backfills)
    return {
        "b_real_model": {
            "load": load,
            "from_model": f"{FROM_MODEL} key with the hash encoder",
            "to_model": f"{TO_MODEL} (real ONNX, {spec.revision})",
            "documents": n,
            "chunk_size": args.chunk_size,
            "pipelines": args.pipelines,
            "intra_op_threads": threads,
            "raw_encoder_passes": raws,
            "backfills": backfills,
            "raw_docs_per_s_median": round(statistics.median(r["docs_per_s"] for r in raws), 1),
            "backfill_docs_per_s_median": round(statistics.median(r["docs_per_s"] for r in backfills), 1),
            "padding_factor_raw": raws[0]["encoder_calls"]["padding_factor"],
            "padding_factor_backfill": (backfills[0]["encoder_calls"] or {}).get("padding_factor"),
            "ratio": round(ratio, 3),
            "ratios": [r["ratio"] for r in backfills],
            "cpu_ratios": [r["cpu_ratio"] for r in backfills],
            "target_ratio": TARGET_RATIO,
            "target_met": ratio >= TARGET_RATIO,
        }
    }


def compare(run: dict, before: dict, after: dict, n: int) -> None:
    """Add to a backfill run its ratios to the raw passes just before and just after it."""
    raw_rate = n / ((before["seconds"] + after["seconds"]) / 2)
    run["raw_docs_per_s_around"] = round(raw_rate, 1)
    run["ratio"] = round(run["docs_per_s"] / raw_rate, 3)
    raw_cpu = (before["cpu"]["own_cpu_s"] + after["cpu"]["own_cpu_s"]) / 2
    backfill_cpu = run["cpu"]["own_cpu_s"] + run["cpu"].get("postgres_cpu_s", 0.0)
    # 1.0: the backfill used no more CPU per document than the bare encoder (robust to other load, though
    # onnxruntime's spinning threads make CPU time under contention approximate)
    run["cpu_ratio"] = round(raw_cpu / backfill_cpu, 3) if backfill_cpu else None


NOTES = [
    "ratio = backfill docs/s / raw encoder docs/s of the raw passes just before and just after that "
    "backfill (same texts, same chunks, same process and onnxruntime session); the reported ratio is the "
    "median over --repeats backfills; cpu_ratio = raw CPU s/doc / backfill (process + postgres) "
    "CPU s/doc, less sensitive to other load on the machine; encoder_calls: what the gateway (or the raw "
    "pass) handed the real encoder: calls, texts per call, and padding_factor = token positions the "
    "model ran on / tokens of the texts (the encoder pads each piece of max_batch texts to its longest)",
]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = {
        "docs": args.docs,
        "chunk_size": args.chunk_size,
        "pipelines": args.pipelines,
        "repeats": args.repeats,
        "worker": WORKER_CHOICES[args.worker],
    }
    return run_benchmark("backfill_real_model", args, lambda dbs, pid: measure_real(dbs, args, pid), config, NOTES)


if __name__ == "__main__":
    raise SystemExit(main())
