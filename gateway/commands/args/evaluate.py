"""`driftgate evaluate`: retrieval quality of models on a BEIR-layout dataset.

The arguments; the command itself is gateway/commands/evaluate.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings


def register(commands: argparse._SubParsersAction) -> None:
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
    evaluate.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
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
