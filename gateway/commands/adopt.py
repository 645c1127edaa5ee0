"""`driftgate adopt C --table ...` and `driftgate adopt C --stop`, over the admin API."""

from __future__ import annotations

import argparse
import os
import sys
import time

from gateway.client import Client
from gateway.client.errors import DriftgateError
from gateway.commands.status_view import format_adoption
from gateway.config import admin_token_from_env

EXAMPLE = """\
examples:
  # take over public.items (id, body, embedding vector(384)) written by other applications,
  # keep following their writes, and watch the import
  driftgate adopt items --table public.items --id-column id --text-column body \\
      --vector-column embedding --model all-MiniLM-L6-v2 --metadata-columns lang --follow --watch
  # later, once the applications write through the gateway
  driftgate adopt items --stop
  # one collection of LangChain PGVector's shared table, its cmetadata as the metadata
  driftgate adopt notes --table public.langchain_pg_embedding --id-column id --text-column document \
      --vector-column embedding --model all-MiniLM-L6-v2 --metadata-json cmetadata \
      --where collection_id=<uuid from langchain_pg_collection>

Before anything is written, a random sample of rows (--sample, default 200) is re-embedded with
--model and compared with the stored vectors: vectors made by another model are refused
(409 vectors_mismatch) and nothing is created. See docs/adopting.md.
"""


def add_parser(commands) -> None:
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


def run(args) -> int:
    token = admin_token_from_env()
    if not token:
        print("driftgate: set DRIFTGATE_ADMIN_TOKEN to the gateway's admin token", file=sys.stderr)
        return 2
    try:
        with Client(args.url, admin_token=token, timeout=120.0) as client:
            return _adopt(client, args)
    except DriftgateError as exc:
        print(f"driftgate: {exc}", file=sys.stderr)
        return 1


def _adopt(client: Client, args) -> int:
    if args.stop:
        adoption = client.stop_adoption(args.collection)["adoption"]
        print(
            f"{args.collection}: {'stopped following' if adoption['changed'] else 'was not following'} "
            f"{adoption['table']}; triggers and queue removed, the gateway accepts writes"
        )
        return 0
    missing = [
        f"--{n.replace('_', '-')}"
        for n in ("table", "id_column", "text_column", "vector_column", "model")
        if not getattr(args, n)
    ]
    if missing:
        print(f"driftgate: adopt needs {', '.join(missing)} (or --stop); see driftgate adopt --help", file=sys.stderr)
        return 2
    where = None
    if args.where:
        column, sep, value = args.where.partition("=")
        if not sep or not column.strip() or not value:
            print("driftgate: --where takes COLUMN=VALUE, e.g. collection_id=6a1f...", file=sys.stderr)
            return 2
        where = {column.strip(): value}
    adoption = client.adopt(
        args.collection,
        args.table,
        id_column=args.id_column,
        text_column=args.text_column,
        vector_column=args.vector_column,
        model=args.model,
        metadata_columns=[c.strip() for c in args.metadata_columns.split(",") if c.strip()],
        sample=args.sample,
        follow=args.follow,
        metadata_json_column=args.metadata_json,
        where=where,
    )["adoption"]
    sample = adoption["sample"]
    checked = (
        f"sample of {sample['sampled']} matches {args.model} (min cosine {sample['cosine_min']:.6f})"
        if sample["sampled"]
        else "no sample checked"
    )
    print(
        f"adopting {adoption['table']} into {args.collection}: {checked}; "
        f"{'following its writes' if args.follow else 'one-off import'}"
    )
    if args.watch:
        return _watch(client, args.collection)
    print(f"watch it: driftgate migrate status {args.collection} --watch")
    return 0


def _watch(client: Client, collection: str) -> int:
    while True:
        adoption = client.adoption_status(collection) or {}
        print(format_adoption(dict(adoption)), file=sys.stderr, flush=True)
        if adoption.get("state") == "failed":  # the reason is on the line above; it is retried
            print(f"watch it: driftgate migrate status {collection} --watch", file=sys.stderr)
            return 1
        if adoption.get("state") not in ("importing", "indexing"):
            return 0
        time.sleep(1.0)
