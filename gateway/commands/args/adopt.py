"""`driftgate adopt`: adopt an existing pgvector table as a collection.

The arguments; the command itself is gateway/commands/adopt.py.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings


EXAMPLE = """\
examples:
  # take over public.items (id, body, embedding vector(384)) written by other applications,
  # keep following their writes, and watch the import
  driftgate adopt items --table public.items --id-column id --text-column body \\
      --vector-column embedding --model all-MiniLM-L6-v2 --metadata-columns lang --follow --watch
  # later, once the applications write through the gateway
  driftgate adopt items --stop
  # one collection of LangChain PGVector's shared table, its cmetadata as the metadata
  driftgate adopt notes --table public.langchain_pg_embedding --id-column id --text-column document \\
      --vector-column embedding --model all-MiniLM-L6-v2 --metadata-json cmetadata \\
      --where collection_id=<uuid from langchain_pg_collection>

Before anything is written, a random sample of rows (--sample, default 200) is re-embedded with
--model and compared with the stored vectors: vectors made by another model are refused
(409 vectors_mismatch) and nothing is created. See docs/adopting.md.
"""


def register(commands: argparse._SubParsersAction) -> None:
    adopt = commands.add_parser(
        "adopt",
        help="adopt an existing pgvector table as a collection (no re-embedding)",
        description="Adopt a table of the gateway's database as a new collection: check a sample of its "
        "vectors against the model, import it in chunks (resumable), embed rows without a vector, build "
        "the index; with --follow, keep applying the table's inserts, updates and deletes. Calls the admin "
        "API at --url with the token in DRIFTGATE_ADMIN_TOKEN.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    adopt.add_argument("collection", help="name of the new collection")
    adopt.add_argument(
        "--url",
        default=os.environ.get("DRIFTGATE_URL", "http://127.0.0.1:8080"),
        help="gateway base URL (default $DRIFTGATE_URL or http://127.0.0.1:8080)",
    )
    adopt.add_argument("--table", help="schema.table to adopt (schema defaults to public)")
    adopt.add_argument("--id-column", help="unique column that becomes the document id")
    adopt.add_argument("--text-column", help="column with the text the vectors were made from")
    adopt.add_argument("--vector-column", help="pgvector column with the stored vectors")
    adopt.add_argument("--model", help="key of the model that made the vectors (driftgate models list)")
    adopt.add_argument("--metadata-columns", default="", help="comma-separated columns kept as metadata")
    adopt.add_argument("--metadata-json", help="json/jsonb column whose object is the metadata itself (e.g. cmetadata)")
    adopt.add_argument(
        "--where",
        metavar="COLUMN=VALUE",
        help="adopt only the rows where COLUMN equals VALUE (one collection of a shared table)",
    )
    adopt.add_argument("--sample", type=int, default=200, help="rows re-embedded and compared first (default 200)")
    adopt.add_argument("--follow", action="store_true", help="keep applying the table's changes (triggers)")
    adopt.add_argument("--watch", action="store_true", help="show progress until the import is complete")
    adopt.add_argument("--stop", action="store_true", help="stop following: drop the triggers and the queue")
    adopt.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.commands import adopt

    return adopt.run(args)
