"""The `driftgate` command line: parse arguments, load the config once, dispatch to a command.

Each command's arguments are defined by its module in gateway/commands/args/ (light), and its
implementation in gateway/commands/ is imported only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from gateway import __version__
from gateway.commands.args import COMMANDS

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
    for name in COMMANDS:
        importlib.import_module(f"gateway.commands.args.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # imported here so `driftgate --help` answers at once
    from gateway import logs
    from gateway.config import ConfigError, load_settings
    from gateway.domain.errors import ModelFilesUnavailable

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
        return args.handler(args, settings)
    except ModelFilesUnavailable as exc:
        print(f"driftgate: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # found at start, e.g. models.execution_provider = "cuda" without CUDA
        print(f"driftgate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
