"""`driftgate backfill-worker`: a standalone backfill worker process.

The arguments; the command itself is gateway/commands/backfill_worker.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings


def register(commands: argparse._SubParsersAction) -> None:
    worker = commands.add_parser(
        "backfill-worker",
        help="a standalone backfill worker process",
        description="Re-embed documents for every collection with a migration in flight. Run any number "
        "of these on any machine that reaches the database: chunks are claimed with FOR UPDATE SKIP "
        "LOCKED, so workers share the work; killing one loses at most the chunks in flight.",
        epilog="example: DATABASE_URL=postgresql://db/app driftgate backfill-worker --burst",
    )
    worker.add_argument("--burst", action="store_true", help="exit when no backfill is left (default: keep polling)")
    worker.add_argument("--worker-id", help="name in the checkpoint table (default: host:pid)")
    worker.add_argument("--data-dir", type=Path, help="the embedded server's data dir when DATABASE_URL is unset")
    worker.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.commands import backfill_worker
    from gateway.commands.serve import database_dsn

    with database_dsn(settings) as dsn:
        return backfill_worker.run(settings, dsn, burst=args.burst, worker_id=args.worker_id)
