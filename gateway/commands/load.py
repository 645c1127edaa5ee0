"""`driftgate load C FILE`: a bulk load of an NDJSON file, resumable.

The file goes to `POST /v1/collections/{c}/documents:bulk` in segments of `--segment` lines,
one request each, with the HNSW index deferred until the last one. A checkpoint beside the file
(`FILE.driftgate-load.json`) records how many lines are stored, after every segment and when a
bad line stops the load (the gateway says how many lines before it it stored), so `--resume`
goes on from there after a fix, a crash or a killed gateway. Lines sent twice are harmless:
documents are upserted by id.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from gateway.client import Client
from gateway.client.errors import DriftgateError, InvalidLine
from gateway.config import api_key


@dataclass
class Checkpoint:
    """Which file (by size and modification time) and how many of its lines are stored."""

    collection: str
    size: int
    mtime_ns: int
    lines_done: int

    @staticmethod
    def path(file: Path) -> Path:
        return file.with_name(file.name + ".driftgate-load.json")

    @classmethod
    def fresh(cls, collection: str, file: Path) -> Checkpoint:
        stat = file.stat()
        return cls(collection, stat.st_size, stat.st_mtime_ns, 0)

    def matches(self, other: Checkpoint) -> bool:
        return (self.collection, self.size, self.mtime_ns) == (other.collection, other.size, other.mtime_ns)

    def save(self, file: Path) -> None:
        self.path(file).write_text(json.dumps(asdict(self)))


def run(args) -> int:
    if args.segment < 1:
        return _fail("--segment must be at least 1")
    if not args.file.is_file():
        return _fail(f"{args.file} is not a file")
    checkpoint = Checkpoint.fresh(args.collection, args.file)
    done = _resumed(args, checkpoint)
    if done is None:
        return 2
    checkpoint.lines_done = done
    total = _count_lines(args.file)
    with Client(args.url, api_key=api_key()) as client:
        try:
            index = args.index if args.index != "auto" else _auto_index(client, args.collection, total - done)
            return _load(client, args, checkpoint, total, index)
        except InvalidLine as exc:
            return _fail(f"line {checkpoint.lines_done + (exc.line or 0)}: {_problem(exc)}; {_resume_hint(args)}")
        except DriftgateError as exc:
            return _fail(f"{exc.message} ({exc.code}); {checkpoint.lines_done} lines are stored. {_resume_hint(args)}")


def _load(client: Client, args, checkpoint: Checkpoint, total: int, index: str) -> int:
    """Send the file's lines after `checkpoint.lines_done` segment by segment; the index is
    deferred until the last segment builds it (or kept, or left for later)."""
    with args.file.open("rb") as lines, tqdm(total=total, initial=checkpoint.lines_done, unit="line") as bar:
        remaining = itertools.islice(lines, checkpoint.lines_done, None)
        loaded = truncated = 0
        while segment := list(itertools.islice(remaining, args.segment)):
            last = checkpoint.lines_done + len(segment) >= total
            mode = index if index == "keep" or last else "later"
            try:
                answer = client.bulk_load(args.collection, _terminated(segment), index=mode)
            except InvalidLine as exc:
                checkpoint.lines_done += exc.committed_lines
                checkpoint.save(args.file)
                raise
            checkpoint.lines_done += len(segment)
            checkpoint.save(args.file)
            loaded += answer.loaded
            truncated += answer.truncated
            bar.update(len(segment))
    Checkpoint.path(args.file).unlink(missing_ok=True)
    built = {"keep": "kept up to date", "later": "left to build (POST /admin/v1/collections/C/index)"}
    print(
        f"{args.collection}: {loaded} documents loaded from {args.file} ({truncated} texts cut to the model's "
        f"input); index {built.get(index, 'built')}"
    )
    return 0


def _resumed(args, fresh: Checkpoint) -> int | None:
    """Lines to skip: 0, or what a checkpoint of this very file says with --resume; None: refuse."""
    path = Checkpoint.path(args.file)
    if not path.exists():
        return 0
    try:
        saved = Checkpoint(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        print(f"driftgate: {path} is not a checkpoint of driftgate load; delete it", file=sys.stderr)
        return None
    if not args.resume:
        print(
            f"driftgate: {path} says {saved.lines_done} lines of this file are stored; add --resume to go on "
            "from there, or delete it to load the whole file again",
            file=sys.stderr,
        )
        return None
    if saved.collection != fresh.collection:
        print(f"driftgate: {path} is a checkpoint of a load into {saved.collection!r}; delete it", file=sys.stderr)
        return None
    if not saved.matches(fresh):  # the usual case: a bad line was fixed in place
        print(
            f"note: {args.file} changed since the checkpoint; going on from line {saved.lines_done + 1} "
            "(lines before it must be the same ones)",
            file=sys.stderr,
        )
    return saved.lines_done


def _auto_index(client: Client, collection: str, lines: int) -> str:
    """Rebuild the index for a load of at least a tenth of the collection, else keep it."""
    documents = client.get_collection(collection).documents or 0
    return "rebuild" if lines * 10 >= documents else "keep"


def _count_lines(file: Path) -> int:
    with file.open("rb") as lines:
        return sum(1 for _ in lines)


def _terminated(segment: list[bytes]) -> Iterator[bytes]:
    """The segment's lines, the last one ended with a newline too."""
    for line in segment:
        yield line if line.endswith(b"\n") else line + b"\n"


def _problem(exc: InvalidLine) -> str:
    """What is wrong with the line, without the gateway's line numbers (counted within one
    request; the CLI counts from the top of the file)."""
    message = exc.message.split("; nothing of its chunk", 1)[0]
    return message.split(": ", 1)[1] if message.startswith("line ") else message


def _resume_hint(args) -> str:
    return f"fix it, then: driftgate load {args.collection} {args.file} --resume"


def _fail(message: str) -> int:
    print(f"driftgate: {message}", file=sys.stderr)
    return 1
