"""BEIR-layout retrieval datasets: the Vaswani collection shipped in the package, or any directory.

A BEIR directory has corpus.jsonl ({"_id", "title", "text"}), queries.jsonl ({"_id", "text"})
and qrels/test.tsv (query-id, corpus-id, score, with a header line).
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class Dataset:
    corpus: list[tuple[str, str]]  # (doc id, text)
    queries: list[tuple[str, str]]  # (query id, text)
    qrels: dict[str, set[str]]  # query id -> relevant doc ids


def _read_jsonl(handle: IO[str], limit: int | None) -> list[tuple[str, str]]:
    rows = []
    for line in handle:
        if not line.strip():
            continue
        item = json.loads(line)
        text = " ".join(part for part in (item.get("title", ""), item["text"]) if part)
        rows.append((str(item["_id"]), text))
        if limit is not None and len(rows) >= limit:
            break
    return rows


def _read_qrels(handle: IO[str]) -> dict[str, set[str]]:
    qrels: dict[str, set[str]] = {}
    reader = csv.reader(handle, delimiter="\t")
    next(reader, None)
    for row in reader:
        if len(row) >= 3 and float(row[2]) > 0:
            qrels.setdefault(row[0], set()).add(row[1])
    return qrels


def vaswani(limit: int | None = None) -> Dataset:
    """The Vaswani (NPL) collection shipped inside the package (11,429 abstracts, 93 queries)."""
    root = resources.files("gateway") / "data" / "vaswani"
    with root.joinpath("corpus.jsonl.gz").open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as handle:
        corpus = _read_jsonl(handle, limit)
    with root.joinpath("queries.jsonl").open("r", encoding="utf-8") as handle:
        queries = _read_jsonl(handle, None)
    with root.joinpath("qrels.tsv").open("r", encoding="utf-8") as handle:
        qrels = _read_qrels(handle)
    return Dataset(corpus, queries, qrels)


def load_beir(directory: Path, limit: int | None = None) -> Dataset:
    """A BEIR-layout dataset from disk; a missing file raises FileNotFoundError naming it."""
    directory = Path(directory)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory / name} is missing: a BEIR dataset needs corpus.jsonl, queries.jsonl and qrels/test.tsv"
            )
    with (directory / "corpus.jsonl").open(encoding="utf-8") as handle:
        corpus = _read_jsonl(handle, limit)
    with (directory / "queries.jsonl").open(encoding="utf-8") as handle:
        queries = _read_jsonl(handle, None)
    with (directory / "qrels" / "test.tsv").open(encoding="utf-8") as handle:
        qrels = _read_qrels(handle)
    return Dataset(corpus, queries, qrels)
