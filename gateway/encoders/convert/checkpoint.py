"""Read a sentence-transformers model directory: its modules, configs and safetensors weights.

Everything that shapes the vectors comes from the checkpoint itself: the architecture
(config.json), max_seq_length and lower-casing (sentence_bert_config.json), the pooling
mode (1_Pooling/config.json), whether a Normalize module follows, and the prompts
(config_sentence_transformers.json). What is not supported is refused by name.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"
ARCHITECTURES = ("bert", "mpnet")  # config.json model_type values we can build
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
)
POOLING_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
}
UNSUPPORTED_POOLING = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")


class CheckpointError(ValueError):
    """The checkpoint is incomplete or asks for something the converter does not support."""


@dataclass(frozen=True)
class Checkpoint:
    root: Path
    model_type: str
    config: dict
    weights_path: Path
    tokenizer_files: tuple[Path, ...]
    dim: int
    pooling: str
    normalize: bool
    max_tokens: int
    lower_case: bool
    query_prefix: str
    document_prefix: str


def _json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path.name} is missing from {path.parent} ({what})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None


def read_checkpoint(root: Path) -> Checkpoint:
    """Validate a sentence-transformers directory and collect its encoding parameters."""
    modules = _json(root / "modules.json", "the list of sentence-transformers modules")
    kinds = [m.get("type", "?") for m in modules]
    unsupported = [k for k in kinds if k not in (TRANSFORMER, POOLING, NORMALIZE)]
    if unsupported:
        raise CheckpointError(
            f"module(s) {', '.join(unsupported)} in modules.json are not supported "
            "(supported: Transformer, Pooling, Normalize)"
        )
    if kinds[:2] != [TRANSFORMER, POOLING]:
        raise CheckpointError(f"modules.json must start with Transformer then Pooling, found {kinds}")
    transformer_dir = root / modules[0].get("path", "")
    pooling_dir = root / modules[1].get("path", "1_Pooling")

    config = _json(transformer_dir / "config.json", "the transformer's configuration")
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise CheckpointError(
            f"architecture {model_type!r} ({', '.join(config.get('architectures') or [])}) "
            f"is not supported; supported: BertModel (bert), MPNetModel (mpnet)"
        )
    weights_path = transformer_dir / "model.safetensors"
    if not weights_path.is_file():
        other = [p.name for p in transformer_dir.glob("*.bin")]
        hint = f" (found {', '.join(other)}: save the model with safe_serialization=True)" if other else ""
        raise CheckpointError(f"model.safetensors is missing from {transformer_dir}{hint}")
    tokenizer_files = tuple(transformer_dir / n for n in TOKENIZER_FILES if (transformer_dir / n).is_file())
    if not any(p.name in ("tokenizer.json", "vocab.txt") for p in tokenizer_files):
        raise CheckpointError(f"tokenizer.json (or vocab.txt) is missing from {transformer_dir}")

    sbert = _json(transformer_dir / "sentence_bert_config.json", "max_seq_length and do_lower_case")
    max_tokens = sbert.get("max_seq_length")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise CheckpointError(f"sentence_bert_config.json: max_seq_length {max_tokens!r} is not a positive integer")
    pooling_config = _json(pooling_dir / "config.json", "the pooling mode")
    pooling = _pooling_mode(pooling_config)
    dim = int(config["hidden_size"])
    if pooling_config.get("word_embedding_dimension", dim) != dim:
        raise CheckpointError(
            f"1_Pooling/config.json word_embedding_dimension "
            f"{pooling_config['word_embedding_dimension']} differs from hidden_size {dim}"
        )
    query_prefix, document_prefix = _prompts(transformer_dir / "config_sentence_transformers.json")
    if (query_prefix or document_prefix) and pooling_config.get("include_prompt", True) is False:
        raise CheckpointError(
            "1_Pooling/config.json include_prompt=false (prompt tokens left out of pooling) is not supported"
        )
    return Checkpoint(
        root=root,
        model_type=model_type,
        config=config,
        weights_path=weights_path,
        tokenizer_files=tokenizer_files,
        dim=dim,
        pooling=pooling,
        normalize=NORMALIZE in kinds,
        max_tokens=max_tokens,
        lower_case=bool(sbert.get("do_lower_case", False)),
        query_prefix=query_prefix,
        document_prefix=document_prefix,
    )


def _pooling_mode(config: dict) -> str:
    chosen = [mode for key, mode in POOLING_MODES.items() if config.get(key)]
    odd = [key for key in UNSUPPORTED_POOLING if config.get(key)]
    if odd:
        raise CheckpointError(
            f"1_Pooling/config.json: {', '.join(odd)} is not supported (supported: mean, cls, max, lasttoken)"
        )
    if len(chosen) != 1:
        raise CheckpointError(f"1_Pooling/config.json must enable exactly one pooling mode, found {chosen or 'none'}")
    return chosen[0]


def _prompts(path: Path) -> tuple[str, str]:
    """(query prefix, document prefix) from the checkpoint's named prompts; e5 calls documents 'passage'."""
    if not path.is_file():
        return "", ""
    config = _json(path, "prompts")
    prompts = config.get("prompts") or {}
    default = prompts.get(config.get("default_prompt_name") or "", "")
    query = prompts.get("query", default)
    document = next((prompts[n] for n in ("document", "passage", "text", "corpus") if n in prompts), default)
    return query, document


def load_weights(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """The transformer's weights as fp32 numpy arrays, without a 'bert.'/'mpnet.' prefix."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        weights = load_file(str(checkpoint.weights_path))
    except (SafetensorError, TypeError, ValueError) as exc:  # e.g. bfloat16, which numpy lacks
        raise CheckpointError(f"cannot read {checkpoint.weights_path} with safetensors' numpy API ({exc})") from None
    prefix = f"{checkpoint.model_type}."
    if not any(k.startswith("embeddings.") for k in weights) and any(k.startswith(prefix) for k in weights):
        weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    return {k: v.astype(np.float32, copy=False) if v.dtype == np.float16 else v for k, v in weights.items()}


@contextmanager
def opened(source: Path) -> Iterator[Path]:
    """The sentence-transformers directory in `source`: a directory, or a .zip/.whl holding one."""
    source = source.expanduser()
    if source.is_dir():
        yield _find_root(source)
        return
    if not source.is_file():
        raise CheckpointError(f"{source} does not exist")
    if not zipfile.is_zipfile(source):
        raise CheckpointError(f"{source} is neither a directory nor a .zip/.whl archive")
    with zipfile.ZipFile(source) as archive, tempfile.TemporaryDirectory(prefix="driftgate-import-") as tmp:
        prefix = _archive_root(archive, source)
        for member in archive.infolist():
            if member.is_dir() or not member.filename.startswith(prefix) or ".." in member.filename:
                continue
            target = Path(tmp) / member.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        yield Path(tmp) / prefix


def _find_root(directory: Path) -> Path:
    if (directory / "modules.json").is_file():
        return directory
    found = sorted(directory.rglob("modules.json"))
    if len(found) != 1:
        where = ", ".join(str(p.parent) for p in found) or "none"
        raise CheckpointError(
            f"expected one sentence-transformers model (modules.json) under {directory}, found {where}"
        )
    return found[0].parent


def _archive_root(archive: zipfile.ZipFile, source: Path) -> str:
    roots = sorted(
        n[: -len("modules.json")] for n in archive.namelist() if n == "modules.json" or n.endswith("/modules.json")
    )
    if len(roots) != 1:
        raise CheckpointError(
            f"expected one sentence-transformers model (modules.json) in {source}, found {len(roots)}"
        )
    return roots[0]
