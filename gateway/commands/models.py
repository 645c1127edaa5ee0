"""`driftgate models fetch|list|import`: fetch and verify pinned model files; show the catalog; import checkpoints."""

from __future__ import annotations

import json
import sys
from typing import Any

from gateway.commands.models_import import model_origin
from gateway.config import Settings
from gateway.encoders.cache import missing_files
from gateway.encoders.fetch import ensure_files
from gateway.encoders.onnx import load_encoder, resolve_execution_provider
from gateway.encoders.remote import RemoteModelSpec


def fetch(settings: Settings, keys: list[str]) -> int:
    specs = settings.model_specs()
    unknown = [k for k in keys if k not in specs]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; see `driftgate models list`", file=sys.stderr)
        return 2
    chosen = [specs[k] for k in (keys or specs)]
    cache_dir = settings.model_cache_dir()
    resolve_execution_provider(settings.models.execution_provider)  # cuda without CUDA: refused before fetching
    ensure_files(chosen, cache_dir, progress=lambda msg: print(msg, file=sys.stderr))
    for spec in chosen:
        # loading re-hashes every file against its pin and runs the graph once
        encoder = load_encoder(
            spec, cache_dir, settings.models.intra_op_threads, provider=settings.models.execution_provider
        )
        encoder.encode(["driftgate"])
        count = len(spec.files)
        print(f"{spec.key}: ok ({count} file{'' if count == 1 else 's'} verified, fingerprint {spec.fingerprint[:16]})")
    print(f"cache: {cache_dir}")
    return 0


def list_models(settings: Settings, as_json: bool) -> int:
    cache_dir = settings.model_cache_dir()
    local = resolve_execution_provider(settings.models.execution_provider)
    rows: list[dict[str, Any]] = [
        {
            "key": spec.key,
            "dim": spec.dim,
            "max_tokens": spec.max_tokens,
            "max_batch": spec.max_batch,
            "max_batch_tokens": spec.max_batch_tokens,
            "pooling": spec.pooling,
            "fingerprint": spec.fingerprint,
            "execution_provider": "remote" if isinstance(spec, RemoteModelSpec) else local,
            "cached": not missing_files(spec, cache_dir),
            "revision": spec.revision,
            "description": spec.description,
            "query_prefix": spec.query_prefix,
            "document_prefix": spec.document_prefix,
            **model_origin(spec, cache_dir),
        }
        for spec in settings.model_specs().values()
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'KEY':<26} {'DIM':>4} {'TOKENS':>6} {'PER CALL':>14} {'CACHED':<6} {'RUNS ON':<7} FINGERPRINT       REVISION"
    )
    for r in rows:
        tokens = r["max_tokens"] or "graph"
        cached = "yes" if r["cached"] else "no"
        print(
            f"{r['key']:<26} {r['dim']:>4} {tokens:>6} {per_call(r):>14} {cached:<6} {r['execution_provider']:<7} "
            f"{r['fingerprint'][:16]}  {r['revision']}"
        )
    for r in rows:
        if r["source"] == "imported":
            print(
                f"  {r['key']}: imported from {r['imported_from']} (weights sha256 {r['weights_sha256'][:16]}, "
                f"onnx sha256 {r['files']['onnx:model.onnx'][:16]})"
            )
        if r["prompts"]:
            declared = ", ".join(f"{name} {text!r}" for name, text in sorted(r["prompts"].items()))
            print(
                f"  {r['key']}: prompts {declared} (query uses {r['query_prefix']!r}, document {r['document_prefix']!r})"
            )
    print(f"\nlocal models run on {local} (models.execution_provider = {settings.models.execution_provider!r})")
    print(
        f"\ncache: {cache_dir}  (fetch with `driftgate models fetch [KEY...]`, "
        "add your own with `driftgate models import PATH --key KEY`)"
    )
    return 0


def per_call(row: dict) -> str:
    """What one inference call takes: a token budget and a text cap, or a number of texts."""
    if row.get("max_batch_tokens"):
        return f"{row['max_batch_tokens']}tok/{row['max_batch']}"
    return f"{row['max_batch']} text" + ("" if row["max_batch"] == 1 else "s")
