"""Read a checkpoint folder: its modules, configs and safetensors weights, in every layout in use.

Three layouts are read:
- sentence-transformers as saved today (6.x): module types such as
  `sentence_transformers.base.modules.transformer.Transformer`, the pooling as `pooling_mode`,
  the max length in tokenizer_config.json, prompts in config_sentence_transformers.json;
- sentence-transformers as saved before (2.x-5.x): `sentence_transformers.models.Transformer`,
  `pooling_mode_*_token(s)` flags, max_seq_length in sentence_bert_config.json, the
  transformer at the root or in `0_Transformer/`, prompts at the root or beside the transformer;
- a plain Hugging Face encoder (config.json, model.safetensors, tokenizer, no modules.json),
  with the pooling and normalisation the operator names (`--pooling`, `--normalize`).

Everything that shapes the vectors comes from the checkpoint (or, for a plain one, from the
operator); every value is type-checked here, before anything is written anywhere. What is not
supported is refused by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.encoders.convert.archive import inside, opened
from gateway.encoders.convert.errors import CheckpointError
from gateway.encoders.convert.weights import read_safetensors

__all__ = ["Checkpoint", "CheckpointError", "PlainPooling", "load_weights", "opened", "read_checkpoint"]

MODULES = ("Transformer", "Pooling", "Normalize")  # class names, under any sentence_transformers package path
ARCHITECTURES = {"bert": "BertModel", "mpnet": "MPNetModel", "xlm-roberta": "XLMRobertaModel"}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
)
POOLING_FLAGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
}
UNSUPPORTED_POOLING = {
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}
SUPPORTED_POOLING = ("mean", "cls", "max", "lasttoken")
# config.json values the graph depends on: (key, smallest, largest)
CONFIG_INTS = (
    ("hidden_size", 8, 8192),
    ("num_hidden_layers", 1, 128),
    ("num_attention_heads", 1, 256),
    ("intermediate_size", 1, 65536),
    ("vocab_size", 1, 1 << 22),
    ("max_position_embeddings", 1, 1 << 20),
)
UNSET_LENGTH = 1_000_000  # tokenizers write model_max_length 1e30 when they know none
DOCUMENT_PROMPTS = ("document", "passage", "text", "corpus")  # e5 calls documents 'passage'


@dataclass(frozen=True)
class PlainPooling:
    """How to pool a plain Hugging Face checkpoint, which does not say."""

    pooling: str
    normalize: bool


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
    layout: str = "sentence-transformers"  # or "hugging-face" (plain)
    prompts: tuple[tuple[str, str], ...] = ()  # every prompt the checkpoint declares, by name


def _json(path: Path, what: str, *, required: bool = True) -> Any:
    if not path.is_file():
        if not required:
            return None
        raise CheckpointError(f"{path.name} is missing from {path.parent} ({what})")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise CheckpointError(f"{where} must be a JSON object, found {type(value).__name__}")
    return value


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CheckpointError(f"{where} is {value!r}; expected an integer from {low} to {high}")
    return value


def read_checkpoint(root: Path, plain: PlainPooling | None = None) -> Checkpoint:
    """Validate a checkpoint folder and collect its encoding parameters; writes nothing."""
    if (root / "modules.json").is_file():
        if plain is not None:
            raise CheckpointError(
                f"{root} is a sentence-transformers model: its pooling comes from its own files; "
                "drop --pooling/--normalize"
            )
        return _sentence_transformers(root)
    if plain is None:
        raise CheckpointError(
            f"{root} has no modules.json: it is a plain Hugging Face checkpoint, which does not say how to pool. "
            "Pass --pooling mean (what sentence-transformers uses for such a checkpoint), cls or max, and "
            "--normalize if the vectors are meant for cosine similarity"
        )
    if plain.pooling not in ("mean", "cls", "max"):
        raise CheckpointError(f"--pooling {plain.pooling!r} is not supported (supported: mean, cls, max)")
    transformer = _transformer(root, root)
    return Checkpoint(
        **transformer,
        root=root,
        pooling=plain.pooling,
        normalize=plain.normalize,
        max_tokens=_max_tokens(root, None, transformer["config"]),
        lower_case=_lower_case(root, None),
        query_prefix="",
        document_prefix="",
        layout="hugging-face",
    )


def _sentence_transformers(root: Path) -> Checkpoint:
    modules = _json(root / "modules.json", "the list of sentence-transformers modules")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise CheckpointError("modules.json must be a list of objects with a type and a path")
    kinds = [_module_kind(m.get("type")) for m in modules]
    unsupported = [str(m.get("type")) for m, kind in zip(modules, kinds, strict=True) if kind is None]
    if unsupported:
        raise CheckpointError(
            f"module(s) {', '.join(unsupported)} in modules.json are not supported "
            "(supported: Transformer, Pooling, Normalize)"
        )
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise CheckpointError(f"modules.json must be Transformer, Pooling, then optionally Normalize; found {kinds}")
    transformer_dir = _module_dir(root, modules[0].get("path", ""))
    pooling_dir = _module_dir(root, modules[1].get("path", "1_Pooling"))
    transformer = _transformer(root, transformer_dir)
    dim = transformer["dim"]

    sbert = _json(transformer_dir / "sentence_bert_config.json", "max_seq_length", required=False)
    sbert = _object(sbert, "sentence_bert_config.json") if sbert is not None else None
    pooling_config = _object(_json(pooling_dir / "config.json", "the pooling mode"), f"{pooling_dir.name}/config.json")
    pooling = _pooling_mode(pooling_config, pooling_dir.name)
    width = pooling_config.get("word_embedding_dimension", pooling_config.get("embedding_dimension", dim))
    if width != dim:
        raise CheckpointError(
            f"{pooling_dir.name}/config.json word_embedding_dimension {width!r} differs from hidden_size {dim}"
        )
    prompts = _prompts(root, transformer_dir)
    query_prefix, document_prefix = _prefixes(prompts)
    if (query_prefix or document_prefix) and pooling_config.get("include_prompt", True) is False:
        raise CheckpointError(
            f"{pooling_dir.name}/config.json include_prompt=false (prompt tokens left out of pooling) is not supported"
        )
    return Checkpoint(
        **transformer,
        root=root,
        pooling=pooling,
        normalize="Normalize" in kinds,
        max_tokens=_max_tokens(transformer_dir, sbert, transformer["config"]),
        lower_case=_lower_case(transformer_dir, sbert),
        query_prefix=query_prefix,
        document_prefix=document_prefix,
        prompts=tuple(sorted((name, text) for name, text in prompts.items() if name)),
    )


def _module_kind(type_name: Any) -> str | None:
    """'Transformer', 'Pooling' or 'Normalize' for any sentence-transformers spelling of them, else None."""
    if not isinstance(type_name, str) or not type_name.startswith("sentence_transformers."):
        return None
    kind = type_name.rsplit(".", 1)[-1]
    return kind if kind in MODULES else None


def _module_dir(root: Path, path: Any) -> Path:
    if not isinstance(path, str) or Path(path).is_absolute() or ".." in Path(path).parts:
        raise CheckpointError(f"modules.json: module path {path!r} must be a folder inside the model")
    return root / path


def _transformer(root: Path, directory: Path) -> dict[str, Any]:
    """The transformer's config (type-checked), weights file and tokenizer files."""
    config = _object(_json(inside(root, directory / "config.json"), "the transformer's configuration"), "config.json")
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        declared = config.get("architectures")
        found: list = declared if isinstance(declared, list) else []
        raise CheckpointError(
            f"architecture {model_type!r} ({', '.join(map(str, found))}) is not supported; supported: "
            + ", ".join(f"{cls} ({name})" for name, cls in ARCHITECTURES.items())
        )
    for key, low, high in CONFIG_INTS:
        if key in config or key in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
            _int(config.get(key), f"config.json {key}", low, high)
    if config["hidden_size"] % config["num_attention_heads"]:
        raise CheckpointError(
            f"config.json hidden_size {config['hidden_size']} is not a multiple of "
            f"num_attention_heads {config['num_attention_heads']}"
        )
    eps = config.get("layer_norm_eps", 1e-12)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < 1:
        raise CheckpointError(f"config.json layer_norm_eps is {eps!r}; expected a number between 0 and 1")
    weights_path = directory / "model.safetensors"
    if not weights_path.is_file():
        other = [p.name for p in directory.glob("*.bin")]
        hint = f" (found {', '.join(other)}: save the model with safe_serialization=True)" if other else ""
        raise CheckpointError(f"model.safetensors is missing from {directory}{hint}")
    tokenizer_files = tuple(inside(root, directory / n) for n in TOKENIZER_FILES if (directory / n).exists())
    if not any(p.name in ("tokenizer.json", "vocab.txt") for p in tokenizer_files):
        raise CheckpointError(
            f"tokenizer.json (or vocab.txt) is missing from {directory}; save the tokenizer with the model"
        )
    return {
        "model_type": model_type,
        "config": config,
        "weights_path": inside(root, weights_path),
        "tokenizer_files": tokenizer_files,
        "dim": config["hidden_size"],
    }


def _max_tokens(directory: Path, sbert: dict | None, config: dict) -> int:
    """sentence_bert_config.json's max_seq_length, else the tokenizer's model_max_length, else the positions'."""
    if sbert is not None and sbert.get("max_seq_length") is not None:
        return _int(sbert["max_seq_length"], "sentence_bert_config.json max_seq_length", 1, UNSET_LENGTH)
    tokenizer = _json(directory / "tokenizer_config.json", "model_max_length", required=False)
    length = _object(tokenizer, "tokenizer_config.json").get("model_max_length") if tokenizer is not None else None
    positions = config.get("max_position_embeddings", 512)
    if config["model_type"] == "xlm-roberta":
        positions -= config.get("pad_token_id", 1) + 1  # positions count from padding_idx + 1
    if isinstance(length, int | float) and not isinstance(length, bool) and 1 <= length < UNSET_LENGTH:
        if length != int(length):
            raise CheckpointError(f"tokenizer_config.json model_max_length {length!r} is not an integer")
        return min(int(length), positions)
    return positions


def _lower_case(directory: Path, sbert: dict | None) -> bool:
    """Lower-casing that sentence-transformers applies itself (the tokenizer's own is in tokenizer.json)."""
    value = (sbert or {}).get("do_lower_case", False)
    if not isinstance(value, bool):
        raise CheckpointError(f"sentence_bert_config.json do_lower_case is {value!r}; expected true or false")
    return value


def _pooling_mode(config: dict, where: str) -> str:
    """The pooling from `pooling_mode` (6.x) or from the `pooling_mode_*` flags (earlier)."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        if isinstance(mode, list) and len(mode) == 1:
            mode = mode[0]
        mode = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}.get(mode, mode)
        if mode in SUPPORTED_POOLING:
            return str(mode)
        raise CheckpointError(
            f"{where}/config.json: pooling_mode {config['pooling_mode']!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_POOLING)})"
        )
    chosen = [mode for key, mode in POOLING_FLAGS.items() if config.get(key)]
    odd = [key for key in UNSUPPORTED_POOLING if config.get(key)]
    if odd:
        raise CheckpointError(
            f"{where}/config.json: {', '.join(odd)} is not supported (supported: {', '.join(SUPPORTED_POOLING)})"
        )
    if len(chosen) != 1:
        raise CheckpointError(f"{where}/config.json must enable exactly one pooling mode, found {chosen or 'none'}")
    return chosen[0]


def _prompts(root: Path, transformer_dir: Path) -> dict[str, str]:
    """The named prompts, from config_sentence_transformers.json at the root or beside the transformer."""
    for directory in dict.fromkeys((root, transformer_dir)):
        config = _json(directory / "config_sentence_transformers.json", "prompts", required=False)
        if config is None:
            continue
        config = _object(config, "config_sentence_transformers.json")
        prompts = _object(config.get("prompts") or {}, "config_sentence_transformers.json prompts")
        if not all(isinstance(v, str) for v in prompts.values()):
            raise CheckpointError("config_sentence_transformers.json prompts must map names to strings")
        default = config.get("default_prompt_name")
        if default is not None and default not in prompts:
            raise CheckpointError(f"config_sentence_transformers.json default_prompt_name {default!r} is not a prompt")
        return {**prompts, **({"": prompts[default]} if default else {})}
    return {}


def _prefixes(prompts: dict[str, str]) -> tuple[str, str]:
    """(query prefix, document prefix); "" names the default prompt, used where a kind has none."""
    default = prompts.get("", "")
    query = prompts.get("query", default)
    document = next((prompts[n] for n in DOCUMENT_PROMPTS if n in prompts), default)
    return query, document


def load_weights(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """The transformer's weights as fp32 numpy arrays (bf16/fp16 widened), without a model prefix."""
    weights = read_safetensors(checkpoint.weights_path)
    prefix = {"xlm-roberta": "roberta."}.get(checkpoint.model_type, f"{checkpoint.model_type}.")
    if not any(k.startswith("embeddings.") for k in weights) and any(k.startswith(prefix) for k in weights):
        weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    return weights
