"""Models added with `driftgate models import`: converted into the model cache and listed in a manifest.

The manifest (`imported.json` in the model cache) holds each imported model's spec: its
converted files with their sha256, the encoding parameters read from the checkpoint, and
where it came from. `Settings.model_specs()` merges it with the catalog, so an imported
key works wherever a catalog key does: serve, embed, migrate, evaluate, /v1/embeddings.

An import either completes or leaves nothing behind: the checkpoint is validated and
converted into a staging folder, the staged graph is loaded and run once, and only then is
the folder moved into place and the manifest written, last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.domain.errors import ImportRefused
from gateway.encoders.cache import Progress, local_path
from gateway.encoders.catalog import CATALOG, ModelFile, ModelSpec
from gateway.encoders.convert import CheckpointError, Converted, PlainPooling, convert

MANIFEST = "imported.json"
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class ImportResult:
    spec: ModelSpec
    source: str
    weights_sha256: str
    unchanged: bool  # the key was already imported from an identical checkpoint
    probe: np.ndarray  # the vector of "driftgate", from the staged graph before it was registered


def _manifest_path(cache_dir: Path) -> Path:
    return cache_dir / MANIFEST


def _read(cache_dir: Path) -> dict[str, dict]:
    path = _manifest_path(cache_dir)
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("models", {})


def _write(cache_dir: Path, models: dict[str, dict]) -> None:
    path = _manifest_path(cache_dir)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps({"version": 1, "models": models}, indent=2, sort_keys=True) + "\n")
    partial.replace(path)


def _spec(key: str, entry: dict) -> ModelSpec:
    return ModelSpec(
        key=key,
        name=entry["name"],
        revision=entry["revision"],
        dim=entry["dim"],
        files=tuple(ModelFile(f["role"], f"{key}/{f['name']}", f["sha256"], derived=True) for f in entry["files"]),
        output="last_hidden_state",
        pooling=entry["pooling"],
        normalize=entry["normalize"],
        query_prefix=entry["query_prefix"],
        document_prefix=entry["document_prefix"],
        max_tokens=entry["max_tokens"],
        lower_case=entry["lower_case"],
        max_batch=entry.get("max_batch", 8),
        verify_min_cosine=0.9999,
        description=f"imported from {entry['source']}",
    )


def declared_prompts(cache_dir: Path, key: str) -> dict[str, str]:
    """The prompts an imported checkpoint declares, by name (empty for other keys)."""
    entry = _read(cache_dir).get(key) or {}
    return dict(entry.get("prompts") or {})


def imported_specs(cache_dir: Path) -> dict[str, ModelSpec]:
    """Every imported model's spec, by key (empty when nothing was imported)."""
    return {key: _spec(key, entry) for key, entry in sorted(_read(cache_dir).items())}


def imported_source(cache_dir: Path, key: str) -> dict | None:
    """Where an imported model came from: {"source", "weights_sha256"}, or None for other keys."""
    entry = _read(cache_dir).get(key)
    return {"source": entry["source"], "weights_sha256": entry["weights_sha256"]} if entry else None


def import_checkpoint(
    source: Path,
    key: str,
    cache_dir: Path,
    *,
    reserved: set[str] | frozenset[str] = frozenset(),
    replace: bool = False,
    progress: Progress | None = None,
    plain: PlainPooling | None = None,
) -> ImportResult:
    """Convert `source` into the cache under `key` and record it in the manifest.

    A key that is already imported from a different checkpoint is refused unless `replace`:
    a collection registered under the key would otherwise find its model changed.
    """
    if not KEY.fullmatch(key):
        raise ImportRefused(
            f"invalid key {key!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if key in CATALOG or key in reserved:
        raise ImportRefused(f"key {key!r} is taken by a built-in or configured model; choose another --key")
    converted_dir = cache_dir / "converted"
    staging = converted_dir / f".import-{os.getpid()}"
    try:
        converted = convert(source, staging, progress, plain)
        entry = _entry(source, converted)
        probe = _run_staged(staging, entry, cache_dir)
        models = _read(cache_dir)
        previous = models.get(key)
        spec = _spec(key, entry)
        unchanged = previous is not None and _spec(key, previous).fingerprint == spec.fingerprint
        if previous is not None and not unchanged and not replace:
            raise ImportRefused(
                f"key {key!r} is already imported from another checkpoint ({previous['source']}); a changed model "
                "is a new model: import it under a new --key and migrate to it (or pass --replace if nothing uses it)"
            )
        target = local_path(spec.files[0], cache_dir).parent
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)
        models[key] = entry
        _write(cache_dir, models)  # last: a failure anywhere above registers nothing
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ImportResult(spec, str(entry["source"]), entry["weights_sha256"], unchanged, probe)


def _entry(source: Path, converted: Converted) -> dict:
    checkpoint = converted.checkpoint
    weights_sha256 = converted.weights_sha256
    return {
        "name": str(checkpoint.config.get("_name_or_path") or source.name),
        "revision": f"imported, weights sha256 {weights_sha256[:12]}",
        "source": str(source.expanduser().resolve()),
        "weights_sha256": weights_sha256,
        "dim": checkpoint.dim,
        "pooling": checkpoint.pooling,
        "normalize": checkpoint.normalize,
        "max_tokens": checkpoint.max_tokens,
        "lower_case": checkpoint.lower_case,
        "query_prefix": checkpoint.query_prefix,
        "document_prefix": checkpoint.document_prefix,
        "prompts": dict(checkpoint.prompts),
        "layout": checkpoint.layout,
        "files": [{"role": role, "name": name, "sha256": sha} for role, name, sha in converted.files],
    }


def _run_staged(staging: Path, entry: dict, cache_dir: Path) -> np.ndarray:
    """Load the staged files as the gateway will and embed one text; any failure is the checkpoint's."""
    from gateway.encoders.onnx import OnnxEncoder

    try:
        encoder = OnnxEncoder(_spec(staging.name, entry), cache_dir, intra_op_threads=1)
        vector = encoder.encode(["driftgate"]).vectors[0]
    except Exception as exc:  # onnxruntime and tokenizers raise their own types; all mean the same here
        raise CheckpointError(
            f"the converted model does not run ({type(exc).__name__}: {str(exc)[:300]}); nothing was registered. "
            "Check that config.json belongs to these weights and that the tokenizer files are complete"
        ) from exc
    if not np.isfinite(vector).all():
        raise CheckpointError("the converted model gives non-finite values (NaN/inf); nothing was registered")
    return vector
