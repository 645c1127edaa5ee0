"""`driftgate loadtest`: the zero-downtime proof.

The arguments; the command itself is gateway/loadtest/main.py.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings


def register(commands: argparse._SubParsersAction) -> None:
    load = commands.add_parser(
        "loadtest",
        help="the zero-downtime proof: a whole migration under load",
        description="Start the embedded PostgreSQL and two gateway replicas on loopback ports (or target "
        "running gateways with --url), put an open-loop load of queries, inserts, updates and deletes on "
        "them, and drive a whole migration through the admin API: start, backfill, verify, shadow, "
        "cutover, rollback, cutover, retire. Reports failed requests per phase, lost writes and "
        "resurrected deletes; exits 1 unless all are zero. Its database and the replicas' logs live in a "
        "temporary folder, deleted when the run passes and kept (its path printed) when it fails.",
        epilog="example: driftgate loadtest --short --json report.json --plot timeline.png",
    )
    load.add_argument("--short", action="store_true", help="2,000 documents, about two minutes")
    load.add_argument("--json", help="write the JSON report here (default: stdout)")
    load.add_argument("--plot", help="write a PNG timeline here")
    load.add_argument("--url", help="comma-separated gateway URLs to target instead of starting a cluster")
    load.add_argument("--from", dest="from_model", default="paraphrase-MiniLM-L3-v2", help="old model")
    load.add_argument(
        "--to",
        dest="to_model",
        default="all-MiniLM-L6-v2",
        help="new model (use-multilingual-v3 for a dimension change)",
    )
    load.add_argument("--documents", type=int, help="corpus size (default 2,000 short / 6,000 full)")
    load.add_argument("--rate", type=float, help="offered requests per second (default 20 short / 30 full)")
    load.add_argument("--corpus", help='JSONL file with {"_id", "text"} lines (default: Vaswani)')
    load.add_argument("--kill-replica", action="store_true", help="kill -9 a replica mid-backfill, restart it")
    load.add_argument("--restart-db", action="store_true", help="restart PostgreSQL once mid-backfill")
    load.add_argument(
        "--read-mode",
        choices=["native", "adapted"],
        default="native",
        help="adapted: fit an adapter a third into the backfill and read through it until cutover",
    )
    load.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.loadtest.main import run as run_loadtest

    return run_loadtest(args)
