"""`driftgate embed`: embed JSON lines from stdin.

The arguments; the command itself is gateway/commands/embed.py.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings


def register(commands: argparse._SubParsersAction) -> None:
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
    embed.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.commands import embed

    return embed.run(settings, args.model, input_type=args.input_type)
