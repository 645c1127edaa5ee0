"""`driftgate serve`: run the gateway.

The arguments; the command itself is gateway/commands/serve.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. Without DATABASE_URL or database.dsn in the config it starts the "
        "embedded PostgreSQL + pgvector in --data-dir and stops it on exit; data survives restarts.",
        epilog="example: driftgate serve --host 0.0.0.0 --port 8080 --data-dir /var/lib/driftgate",
    )
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8080)")
    serve.add_argument("--config", type=Path, dest="sub_config", metavar="FILE", help="config file (TOML)")
    serve.add_argument(
        "--data-dir",
        type=Path,
        help="embedded PostgreSQL data directory (default: the config's, else the user data directory)",
    )
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.commands import serve

    return serve.run(settings)
