"""How a model's embedding table stores its vectors: `vector` (float32) or `halfvec` (float16).

pgvector's `halfvec` (>= 0.7) takes 2 bytes per dimension instead of 4, so the table and its
HNSW index are about half the size, at a small cost in recall (docs/storage.md). The choice is
made per (collection, model) table when it is created and recorded in the catalog.
"""

from __future__ import annotations

from enum import StrEnum

# the largest finite float16: a halfvec refuses any value beyond it ("value out of range")
HALFVEC_MAX = 65504.0


class Storage(StrEnum):
    VECTOR = "vector"
    HALFVEC = "halfvec"

    def column_type(self, dim: int) -> str:
        """The SQL type of the embedding column, e.g. `halfvec(384)`."""
        return f"{self.value}({int(dim)})"

    @property
    def cosine_ops(self) -> str:
        """The HNSW operator class of cosine distance on this type."""
        return f"{self.value}_cosine_ops"


def stored_model(entry: str) -> tuple[str, Storage]:
    """`KEY` or `KEY@STORAGE` (how `driftgate evaluate --models` names a model and its table's
    storage, e.g. `all-MiniLM-L6-v2@halfvec`) -> (model key, storage)."""
    key, _, storage = entry.partition("@")
    if not storage:
        return key, Storage.VECTOR
    try:
        return key, Storage(storage)
    except ValueError:
        choices = ", ".join(s.value for s in Storage)
        raise ValueError(f"{entry!r}: the storage after @ is one of {choices}") from None
