"""`driftgate demo`: the whole story on the embedded database.

The arguments; the command itself is gateway/commands/demo.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="the whole story: seed, a live migration under load, shadow metrics, cutover, report",
        description="The whole story on the embedded database: load Vaswani abstracts through the API, "
        "run judged queries, then migrate live to a better model under light traffic (dual-write, "
        "backfill, verify, shadow metrics, cutover, rollback, retire), ask again, and print the report "
        "(failed requests, lost writes) with a PNG timeline. Starts afresh on every run.",
        epilog="example: driftgate demo --documents 500 --plot /tmp/demo.png",
    )
    demo.add_argument("--documents", type=int, default=2000, help="how many abstracts to load (default 2000)")
    demo.add_argument("--queries", type=int, default=5, help="how many judged queries to run (default 5)")
    demo.add_argument("--model", default="paraphrase-MiniLM-L3-v2", help="the collection's first model")
    demo.add_argument("--to", dest="to_model", default="all-MiniLM-L6-v2", help="the model it migrates to")
    demo.add_argument("--rate", type=float, default=5.0, help="requests/s of background traffic (default 5)")
    demo.add_argument(
        "--plot",
        type=Path,
        default=Path("driftgate-demo.png"),
        help="where to write the timeline chart (default ./driftgate-demo.png)",
    )
    demo.add_argument("--data-dir", type=Path, help="embedded PostgreSQL data directory for the demo")
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.commands import demo

    return demo.run(
        settings,
        documents=args.documents,
        queries=args.queries,
        model=args.model,
        to_model=args.to_model,
        data_dir=args.data_dir,
        plot=args.plot,
        rate=args.rate,
    )
