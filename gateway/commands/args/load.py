"""`driftgate load`: bulk-load an NDJSON file of documents.

The arguments; the command itself is gateway/commands/load.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings


EXAMPLE = """\
examples:
  driftgate load articles articles.ndjson                # one {"id", "text", "metadata"} a line
  driftgate load articles articles.ndjson --resume       # after a bad line was fixed, or a crash
  driftgate load articles more.ndjson --index keep       # a few lines into a large collection

The HNSW index is dropped for the load and built when it ends (--index rebuild, the default for
a load of at least a tenth of the collection); queries meanwhile are exact scans. --index keep
inserts every row into the index instead (slower per row, no rebuild); --index later leaves it
for `POST /admin/v1/collections/C/index`. The data-plane key, if the gateway has any, comes from
DRIFTGATE_API_KEY.
"""


def register(commands: argparse._SubParsersAction) -> None:
    load = commands.add_parser(
        "load",
        help="bulk-load an NDJSON file of documents (resumable, index built at the end)",
        description="Load an NDJSON file, one document {id, text, metadata} a line, into a collection "
        "through the gateway at --url: in chunks through the usual write path (every model of a "
        "migration), with the HNSW index built once at the end. A bad line stops the load with its "
        "line number; what came before it is stored, and --resume goes on from there.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_argument("collection", help="an existing collection")
    load.add_argument("file", type=Path, help="NDJSON file, one document a line")
    load.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway (default: %(default)s)")
    load.add_argument(
        "--index",
        choices=("auto", "rebuild", "later", "keep"),
        default="auto",
        help="what happens to the HNSW index (default: auto = rebuild, or keep for a load under a tenth "
        "of the collection)",
    )
    load.add_argument(
        "--segment", type=int, default=20_000, help="lines per request; a checkpoint after each (default: %(default)s)"
    )
    load.add_argument("--resume", action="store_true", help="skip the lines the checkpoint says are stored")
    load.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.commands import load

    return load.run(args)
