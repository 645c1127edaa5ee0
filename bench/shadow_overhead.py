#!/usr/bin/env python
"""Benchmark: primary query latency with shadow reads off, at 10% and at 100% sampling.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

Setup: a throwaway embedded PostgreSQL (or DATABASE_URL), the real gateway app (admin API on,
in-app backfill on), a collection with --model holding --docs Vaswani documents, a migration
to --to-model started through the admin API and waited for until phase == "ready". Then, for
each sample rate, POST .../shadow (0 -> {"model": null}), run an open-loop load (fixed arrival
rate --rate, requests start whether or not earlier ones finished) of POST .../query with the
Vaswani query texts (cycled): --warmup unrecorded seconds, then --seconds recorded. Only the
primary's latency is measured, at the client (same process and event loop as the server).

    python bench/shadow_overhead.py                   # the README's figure
    python bench/shadow_overhead.py --docs 50 --rate 10 --seconds 1 --warmup 0.5   # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time

import aiohttp
from _common import CpuMeter, emit, load_average, log, machine_info, pct, setup_logging
from _db import Databases, PostgresServer
from _gateway import Gateway

from gateway.config import load_settings
from gateway.datasets import vaswani


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", default="paraphrase-MiniLM-L3-v2")
    p.add_argument("--to-model", default="all-MiniLM-L6-v2")
    p.add_argument("--docs", type=int, default=500)
    p.add_argument("--rate", type=float, default=30.0, help="offered queries per second (open loop)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per sample rate")
    p.add_argument("--warmup", type=float, default=3.0, help="unrecorded seconds before each point")
    p.add_argument("--sample-rates", default="0,0.1,1.0")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--collection", default="shadowbench")
    p.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for phase ready")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    a.sample_rates = [float(x) for x in a.sample_rates.split(",") if x.strip()]
    return a


async def open_loop(session, url: str, texts, rate: float, seconds: float, k: int) -> tuple[list[float], dict, float]:
    """Fire POST query at `rate`/s for `seconds`; returns (latencies of 200s, error counts, achieved rate)."""
    lat: list[float] = []
    errors: dict[str, int] = {}
    cycle = itertools.cycle(texts)

    async def one(text: str) -> None:
        t0 = time.perf_counter()
        try:
            async with session.post(url, json={"text": text, "k": k}) as resp:
                await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            status = type(exc).__name__
        if status == 200:
            lat.append((time.perf_counter() - t0) * 1000)
        else:
            errors[str(status)] = errors.get(str(status), 0) + 1

    tasks = set()
    start = time.perf_counter()
    n = 0
    while True:
        due = start + n / rate
        if due - start >= seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t = asyncio.create_task(one(next(cycle)))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        n += 1
    sent_s = time.perf_counter() - start
    if tasks:
        await asyncio.gather(*tasks)
    return lat, errors, n / sent_s


async def wait_ready(gw: Gateway, args) -> float:
    """Start the migration to --to-model and wait for phase ready (the in-app worker backfills)."""
    started = time.perf_counter()
    await gw.admin("POST", args.collection, "migrations", {"to_model": args.to_model})
    while True:
        st = await gw.admin("GET", args.collection, "status")
        if st["phase"] == "ready":
            return round(time.perf_counter() - started, 2)
        if time.perf_counter() - started > args.ready_timeout:
            raise RuntimeError(f"not ready after {args.ready_timeout} s: {st['phase']} {st['backfill']}")
        await asyncio.sleep(1.0)


async def measure_rate(gw: Gateway, args, texts: list[str], rate: float, pg_pid) -> dict:
    """Shadow sampling at `rate` (0: off), open-loop warm-up, then the measured seconds."""
    url = f"{gw.base}/v1/collections/{args.collection}/query"
    body = {"model": None} if rate == 0 else {"model": args.to_model, "sample_rate": rate}
    shadow_resp = await gw.admin("POST", args.collection, "shadow", body)
    before = (await gw.admin("GET", args.collection, "status"))["shadow_metrics"]
    await open_loop(gw.session, url, texts, args.rate, args.warmup, args.k)
    mid = (await gw.admin("GET", args.collection, "status"))["shadow_metrics"]
    with CpuMeter(pg_pid) as meter:
        lat, errors, achieved = await open_loop(gw.session, url, texts, args.rate, args.seconds, args.k)
    await asyncio.sleep(2.5)  # let queued shadow jobs finish before reading the counters
    after = await gw.admin("GET", args.collection, "status")
    sm = after["shadow_metrics"]
    point = {
        "sample_rate": rate,
        "shadow_state": {"phase": shadow_resp.get("phase"), **after["shadow"]},
        "offered_rate": args.rate,
        "achieved_send_rate": round(achieved, 2),
        "completed_per_s": round(len(lat) / args.seconds, 2),
        "ok": len(lat),
        "errors": errors,
        **pct(lat),
        # samples is a rolling-window count (window = shadow.window); dropped is cumulative
        "shadow_samples_total": sm.get("samples"),
        "shadow_samples_during_point": (sm.get("samples") or 0) - (mid.get("samples") or 0),
        "shadow_samples_during_warmup_and_point": (sm.get("samples") or 0) - (before.get("samples") or 0),
        "shadow_dropped_total": sm.get("dropped"),
        "shadow_dropped_during_point": (sm.get("dropped") or 0) - (mid.get("dropped") or 0),
        "shadow_errors": sm.get("errors"),
        "shadow_metrics": {k: v for k, v in sm.items() if k not in ("noise_floor",)},
        "cpu": meter.summary(),
    }
    log(
        f"sample_rate={rate}: p50 {point['p50_ms']} ms, p99 {point['p99_ms']} ms, "
        f"ok {point['ok']}, errors {errors}, samples +{point['shadow_samples_during_point']}, "
        f"dropped +{point['shadow_dropped_during_point']}, cpu {point['cpu']}"
    )
    return point


async def run(args, server: PostgresServer) -> dict:
    dataset = vaswani(limit=args.docs)
    texts = [t for _, t in dataset.queries]
    settings = load_settings(None)  # backfill enabled (the default)
    async with Databases(server.server_dsn) as databases:
        dsn = databases.dsn(await databases.create_or_exit("bench"))
        async with Gateway(settings, dsn, connections=512, timeout_s=60) as gw:
            load = await gw.seed(args.collection, args.model, dataset.corpus)
            ready_s = await wait_ready(gw, args)
            log(f"phase ready after {ready_s} s")
            points = [await measure_rate(gw, args, texts, rate, server.pid) for rate in args.sample_rates]
    return {"load_seconds": load["seconds"], "migration_to_ready_seconds": ready_s, "points": points}


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    load_before = load_average()
    with PostgresServer() as server:
        result = asyncio.run(run(args, server))
    by: dict[float, list[dict]] = {}
    for p in result["points"]:  # a rate may be listed more than once (e.g. 0,0.1,0,0.1): noise
        by.setdefault(p["sample_rate"], []).append(p)

    def mean_p99(rate):
        values = [p["p99_ms"] for p in by.get(rate, []) if p["p99_ms"] is not None]
        return sum(values) / len(values) if values else None

    def ratio(rate):
        off, on = mean_p99(0.0), mean_p99(rate)
        if not off or on is None:
            return None
        return round(on / off, 3)

    r10, r100 = ratio(0.1), ratio(1.0)
    emit(
        {
            "benchmark": "shadow_overhead",
            "machine": machine_info(),
            "config": {
                "model": args.model,
                "to_model": args.to_model,
                "docs": args.docs,
                "rate": args.rate,
                "seconds": args.seconds,
                "warmup": args.warmup,
                "k": args.k,
                "sample_rates": args.sample_rates,
                "database": server.kind,
                "queries": "gateway/data/vaswani/queries.jsonl (cycled)",
            },
            "load_seconds": result.get("load_seconds"),
            "migration_to_ready_seconds": result.get("migration_to_ready_seconds"),
            "results": result["points"],
            "p99_ms_mean_by_sample_rate": {str(rate): mean_p99(rate) for rate in by},
            "p99_ratio_at_10pct": r10,
            "p99_ratio_at_100pct": r100,
            "target_p99_ratio_at_10pct_le_1_05_met": None if r10 is None else r10 <= 1.05,
            "load_average_before": load_before,
            "notes": [
                "open loop: requests start at the offered rate regardless of completions; latency is the "
                "primary's, measured at the client (same process/event loop as the server)",
                "shadow_samples_total is the rolling summary's count (capped at shadow.window); "
                "*_during_point are differences of status readings taken before and 2.5 s after the point",
                "cpu.other_processes_cores > 0 means something else used the CPU during the point",
                "a rate listed more than once is measured each time; the ratios use the mean p99 of its points",
            ],
            "load_average_after": load_average(),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
