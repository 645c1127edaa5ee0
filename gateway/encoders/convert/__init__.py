"""Convert checkpoints (BERT, MPNet, XLM-RoBERTa) into deterministic fp32 ONNX, without torch.

`convert(source, out_dir)` reads the checkpoint (a directory, .zip or .whl; sentence-transformers
of any version, or a plain Hugging Face one given `plain` pooling), writes
`model.onnx` plus the tokenizer files into `out_dir`, and returns what a ModelSpec needs:
every written file with its sha256 and the encoding parameters from the checkpoint.
The same checkpoint always gives byte-identical files, so the same fingerprint.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.encoders.convert.checkpoint import (
    Checkpoint,
    CheckpointError,
    PlainPooling,
    load_weights,
    opened,
    read_checkpoint,
)

__all__ = ["CheckpointError", "Converted", "PlainPooling", "convert"]


@dataclass(frozen=True)
class Converted:
    checkpoint: Checkpoint  # its root may be a temporary directory that is gone by now
    files: tuple[tuple[str, str, str], ...]  # (role, file name, sha256), model.onnx first
    weights_sha256: str  # of the checkpoint's model.safetensors: where the model came from


def convert(
    source: Path,
    out_dir: Path,
    progress: Callable[[str], None] | None = None,
    plain: PlainPooling | None = None,
) -> Converted:
    """Write the ONNX graph and tokenizer files of `source` into `out_dir` (replaced atomically)."""
    from gateway.encoders.cache import sha256_file

    say = progress or (lambda _msg: None)
    with opened(source) as root:
        checkpoint = read_checkpoint(root, plain)
        say(f"converting {checkpoint.model_type} checkpoint ({checkpoint.dim}-d, {checkpoint.pooling} pooling)")
        model = _build(checkpoint)
        partial = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")  # processes may share a cache
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        (partial / "model.onnx").write_bytes(model.SerializeToString())
        del model
        for path in checkpoint.tokenizer_files:
            shutil.copyfile(path, partial / path.name)
        weights_sha256 = sha256_file(checkpoint.weights_path)
    files = [("onnx", "model.onnx", sha256_file(partial / "model.onnx"))]
    files += [("tokenizer", p.name, sha256_file(partial / p.name)) for p in checkpoint.tokenizer_files]
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.replace(out_dir)
    return Converted(checkpoint, tuple(files), weights_sha256)


def _build(checkpoint: Checkpoint):
    from gateway.encoders.convert import bert, mpnet

    weights = load_weights(checkpoint)
    _check_shapes(checkpoint, weights)
    builder = {"bert": bert.build, "mpnet": mpnet.build, "xlm-roberta": bert.build_xlm_roberta}[checkpoint.model_type]
    try:
        return builder(checkpoint.config, weights)
    except KeyError as exc:
        raise CheckpointError(f"weight {exc.args[0]} is missing from {checkpoint.weights_path.name}") from None


def _check_shapes(checkpoint: Checkpoint, weights: dict) -> None:
    """The weights must have the sizes config.json declares, or the graph would fail only when run."""
    hidden = checkpoint.dim
    expected = {
        "embeddings.word_embeddings.weight": (checkpoint.config.get("vocab_size"), hidden),
        "embeddings.position_embeddings.weight": (checkpoint.config.get("max_position_embeddings"), hidden),
        "encoder.layer.0.output.LayerNorm.weight": (hidden,),
    }
    for name, shape in expected.items():
        actual = weights.get(name)
        if actual is None:
            raise CheckpointError(f"weight {name} is missing from {checkpoint.weights_path.name}")
        if len(actual.shape) != len(shape) or any(
            w is not None and h != w for h, w in zip(actual.shape, shape, strict=False)
        ):
            raise CheckpointError(
                f"weight {name} has shape {list(actual.shape)} but config.json declares {list(shape)}; "
                "the config does not belong to these weights"
            )
