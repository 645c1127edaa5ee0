"""`driftgate adopt C --table ...` and `driftgate adopt C --stop`, over the admin API."""

from __future__ import annotations

import sys
import time

from gateway.client import Client
from gateway.client.errors import DriftgateError
from gateway.commands.status_view import format_adoption
from gateway.config import admin_token_from_env


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
