"""Open a checkpoint given as a directory, .zip or .whl without writing outside a scratch folder.

An archive is checked as a whole before a byte is extracted: a member with an absolute or
`..` name, a symlink member, or more expanded bytes than the archive can honestly hold is
refused, and nothing is written. A directory is read in place; a file in it that is a symlink
leading outside the directory is refused, so `vocab.txt -> /etc/passwd` never reaches the
model cache.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from gateway.encoders.convert.errors import CheckpointError

MARKERS = ("modules.json", "config.json")  # a sentence-transformers folder, else a plain Hugging Face one
MAX_EXPANDED_BYTES = 32 << 30  # no encoder checkpoint we can convert is larger
MAX_RATIO = 100  # safetensors weights barely compress; a bomb expands thousands of times
SMALL_ARCHIVE_BYTES = 64 << 20  # below this expanded size the ratio is not checked (JSON compresses well)


@contextmanager
def opened(source: Path) -> Iterator[Path]:
    """The checkpoint folder in `source`: a directory, or a .zip/.whl holding one (extracted to a temp dir)."""
    source = source.expanduser()
    if source.is_dir():
        yield find_root(source)
        return
    if not source.is_file():
        raise CheckpointError(f"{source} does not exist")
    if not zipfile.is_zipfile(source):
        raise CheckpointError(f"{source} is neither a directory nor a .zip/.whl archive")
    with zipfile.ZipFile(source) as archive, tempfile.TemporaryDirectory(prefix="driftgate-import-") as tmp:
        members = checked_members(archive, source)
        prefix = _archive_root([m.filename for m in members], source)
        for member in members:
            if member.is_dir() or not member.filename.startswith(prefix):
                continue
            target = Path(tmp).joinpath(*PurePosixPath(member.filename).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)  # zipfile stops at the declared size
        yield Path(tmp) / prefix


def checked_members(archive: zipfile.ZipFile, source: Path) -> list[zipfile.ZipInfo]:
    """Every member, after refusing unsafe names, symlinks and a bomb's expanded size."""
    members = archive.infolist()
    for member in members:
        name = member.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
            raise CheckpointError(
                f"{source}: member {name!r} has an absolute or '..' path; refusing to extract an archive that "
                "writes outside its folder. Re-create the archive from the model folder (cd into it, then zip -r)"
            )
        if stat.S_ISLNK(member.external_attr >> 16):
            raise CheckpointError(
                f"{source}: member {name!r} is a symlink; archives with links are refused. "
                "Re-create the archive with the files themselves (zip -r without -y)"
            )
    expanded = sum(m.file_size for m in members)
    size = source.stat().st_size
    if expanded > MAX_EXPANDED_BYTES or (expanded > SMALL_ARCHIVE_BYTES and expanded > MAX_RATIO * size):
        raise CheckpointError(
            f"{source}: its members expand to {expanded:,} bytes from {size:,} (the limit is "
            f"{MAX_EXPANDED_BYTES:,} bytes and {MAX_RATIO}x the archive above {SMALL_ARCHIVE_BYTES:,}); "
            "nothing was extracted. Import the model folder itself"
        )
    return members


def find_root(directory: Path) -> Path:
    """The folder holding modules.json (sentence-transformers), else the one holding config.json."""
    for marker in MARKERS:
        if (directory / marker).is_file():
            return directory
        found = sorted(directory.rglob(marker))
        if len(found) == 1:
            return found[0].parent
        if len(found) > 1:
            where = ", ".join(str(p.parent) for p in found)
            raise CheckpointError(f"expected one model ({marker}) under {directory}, found several: {where}")
    raise CheckpointError(
        f"no model under {directory}: expected a sentence-transformers folder (modules.json) or a Hugging Face "
        "checkpoint (config.json, model.safetensors and tokenizer files)"
    )


def _archive_root(names: list[str], source: Path) -> str:
    for marker in MARKERS:
        roots = sorted(n[: -len(marker)] for n in names if n == marker or n.endswith("/" + marker))
        if len(roots) > 1 and marker == "modules.json":
            raise CheckpointError(
                f"expected one sentence-transformers model (modules.json) in {source}, found {len(roots)}"
            )
        if roots:
            return min(roots, key=len)  # config.json: the outermost is the model's own, not a module's
    raise CheckpointError(f"no model in {source}: it holds neither modules.json nor config.json")


def inside(root: Path, path: Path) -> Path:
    """`path` if it is a regular file that stays inside `root` once links are resolved; refused otherwise."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise CheckpointError(
            f"{path} is a link to {resolved}, outside the checkpoint folder; refusing to read it. "
            "Copy the real file into the folder if you trust it"
        )
    if not resolved.is_file():
        raise CheckpointError(f"{path} is not a regular file")
    return path
