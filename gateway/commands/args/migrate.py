"""`driftgate migrate ACTION`: operate a model migration through the admin API.

The arguments; the command itself is gateway/commands/migrate.py.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from gateway.domain.phases import Phase

if TYPE_CHECKING:
    from gateway.config import Settings


def register(commands: argparse._SubParsersAction) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="operate a model migration through the admin API",
        description="Operate a migration: start -> (backfill) -> verify -> shadow -> cutover -> retire. "
        "Calls the admin API at --url with the token in DRIFTGATE_ADMIN_TOKEN.",
        epilog="example: driftgate migrate start articles --to all-MiniLM-L6-v2 && "
        "driftgate migrate status articles --watch",
    )
    actions = migrate.add_subparsers(dest="migrate_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(
            name, help=help_text.replace("%", "%%"), description=help_text, epilog=f"example: {example}"
        )
        sub.add_argument("collection", help="collection name")
        sub.add_argument(
            "--url",
            default=os.environ.get("DRIFTGATE_URL", "http://127.0.0.1:8080"),
            help="gateway URL (default $DRIFTGATE_URL or http://127.0.0.1:8080)",
        )
        return sub

    start = action(
        "start",
        "start dual-writing to a new model and backfilling it",
        "driftgate migrate start articles --to all-MiniLM-L6-v2",
    )
    start.add_argument("--to", required=True, metavar="MODEL", help="the new model's key")
    start.add_argument(
        "--storage",
        choices=["vector", "halfvec"],
        default="vector",
        help="the new model table's element type: vector (float32) or halfvec (float16, half the size; docs/storage.md)",
    )
    plan = action(
        "plan",
        "before starting: documents, tokens, estimated time (measured on a sample), cost; writes nothing",
        "driftgate migrate plan articles --to all-MiniLM-L6-v2   # any key `driftgate models list` shows",
    )
    plan.add_argument("--to", required=True, metavar="MODEL", help="the model you would migrate to")
    plan.add_argument(
        "--sample",
        type=int,
        help="documents to embed for the estimate (default: "
        "max_batch x max_concurrency of a remote model, 64 for a local one)",
    )
    plan.add_argument("--json", action="store_true", help="print the raw JSON plan")
    status = action(
        "status", "phase, coverage, backfill progress, replicas, next step", "driftgate migrate status articles --watch"
    )
    status.add_argument(
        "--watch",
        action="store_true",
        help="refresh in place; stops by itself when the migration waits for you (ready, shadow, cutover, "
        "a paused or failed backfill), at --until, or on Ctrl-C",
    )
    status.add_argument(
        "--until",
        metavar="PHASE",
        choices=[phase.value for phase in Phase],
        help="with --watch: stop when the collection reaches this phase",
    )
    status.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    status.add_argument("--count", type=int, help="stop after this many refreshes")
    status.add_argument("--json", action="store_true", help="print the raw JSON report")
    shadow = action(
        "shadow",
        "configure shadow reads on another written model (model + sample rate)",
        "driftgate migrate shadow articles --rate 0.1",
    )
    shadow.add_argument("--model", help="shadow model (default: the model not being read)")
    shadow.add_argument("--rate", type=float, default=0.1, help="sample rate 0..1 (default 0.1)")
    shadow.add_argument("--off", action="store_true", help="stop shadowing")
    cutover = action(
        "cutover",
        "switch reads to the new model (needs 100% coverage and a passed verify)",
        "driftgate migrate cutover articles",
    )
    cutover.add_argument("--model", help="model to read (default: the migration's new model)")
    cutover.add_argument("--force", action="store_true", help="switch even onto an incomplete index (audited)")
    action(
        "rollback", "switch reads back to the old model (both are still written)", "driftgate migrate rollback articles"
    )
    verify = action(
        "verify",
        "check counts, missing/stale rows and re-embed a sample (exit 1 on failure)",
        "driftgate migrate verify articles --sample 500",
    )
    verify.add_argument("--sample", type=int, default=200, help="documents to re-embed per model")
    verify.add_argument("--json", action="store_true", help="print the raw JSON report")
    retire = action("retire", "stop writing the old model and drop its table", "driftgate migrate retire articles")
    retire.add_argument("--model", help="model to retire (default: the migration's old model)")
    action("abort", "drop the new model's table and go back to the old model", "driftgate migrate abort articles")
    backfill = action(
        "backfill",
        "pause, resume or rate-limit the backfill",
        "driftgate migrate backfill articles pause; driftgate migrate backfill articles --max-rate 200",
    )
    backfill.add_argument("action", nargs="?", choices=["pause", "resume"], help="pause or resume")
    backfill.add_argument("--max-rate", type=float, help="documents per second; 0 removes the limit")
    _add_adapter(actions)
    migrate.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.commands import migrate

    return migrate.run(args)


def _add_adapter(actions) -> None:
    """`migrate adapter VERB C`: the learned bridge between the migration's two models (docs/adapter.md)."""
    adapter = actions.add_parser(
        "adapter",
        help="fit, show, enable or disable the adapter between the migration's two models",
        description="fit: fit maps new->old and old->new on backfilled pairs and report held-out figures; "
        "show: the current figures; enable: serve text queries embedded with the new model from the old "
        "index (read mode adapted); disable: native reads again.",
        epilog="example: driftgate migrate adapter fit articles && driftgate migrate adapter enable articles",
    )
    adapter.add_argument("verb", choices=["fit", "show", "enable", "disable"])
    adapter.add_argument("collection", help="collection name")
    adapter.add_argument(
        "--url",
        default=os.environ.get("DRIFTGATE_URL", "http://127.0.0.1:8080"),
        help="gateway URL (default $DRIFTGATE_URL or http://127.0.0.1:8080)",
    )
    adapter.add_argument("--max-pairs", type=int, help="backfilled pairs to fit on (default adapter.max_pairs)")
    adapter.add_argument(
        "--translate-vectors",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="enable/disable: also map raw vectors of the other model instead of refusing them",
    )
    adapter.add_argument("--json", action="store_true", help="print the raw JSON")
