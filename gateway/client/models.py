"""The client's typed results: frozen dataclasses built from the gateway's JSON answers.

Answers carry more fields than the dataclasses name; admin results keep the whole answer in
`raw` so that a field added to the API is usable before the client names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """A document to write (`version` None) or one read back (with its version)."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    version: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Document:
        return cls(data["id"], data["text"], data.get("metadata") or {}, data.get("version"))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "metadata": dict(self.metadata)}


@dataclass(frozen=True)
class Collection:
    name: str
    read_model: str
    write_models: tuple[str, ...]
    phase: str
    documents: int | None = None  # None in the answer of create_collection
    created: bool = False  # create_collection: True when this call created it
    storage: Mapping[str, str] = field(default_factory=dict)  # model -> "vector" or "halfvec" (docs/storage.md)


@dataclass(frozen=True)
class WriteResult:
    id: str
    version: int
    truncated: bool  # the text was longer than a model's input and was cut


@dataclass(frozen=True)
class Page:
    """One page of `list_documents`; pass `next_cursor` back for the next (None: the last page)."""

    documents: tuple[Document, ...]
    next_cursor: str | None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # cosine similarity: higher is closer
    text: str
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class QueryResult:
    """The hits and the model that served them (also the answer's `X-Driftgate-Model` header)."""

    model: str
    hits: tuple[Hit, ...]
    truncated: bool = False


@dataclass(frozen=True)
class BulkLoad:
    """What a bulk load stored: documents, chunks (one transaction each), lines read, texts cut
    to the model's input, and the index ("built", "deferred" for later, or "kept")."""

    loaded: int
    chunks: int
    lines: int
    truncated: int
    index: str


@dataclass(frozen=True)
class Embeddings:
    model: str
    vectors: tuple[tuple[float, ...], ...]
    tokens: int


@dataclass(frozen=True)
class MigrationState:
    """A collection's migration state after an admin action (start, shadow, cutover, retire, ...)."""

    name: str
    phase: str
    read_model: str
    write_models: tuple[str, ...]
    from_model: str | None
    to_model: str | None
    shadow_model: str | None
    shadow_sample_rate: float
    state_version: int
    changed: bool | None  # retire and abort: whether this call changed anything
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MigrationState:
        return cls(
            name=data["name"],
            phase=data["phase"],
            read_model=data["read_model"],
            write_models=tuple(data["write_models"]),
            from_model=data.get("from_model"),
            to_model=data.get("to_model"),
            shadow_model=data.get("shadow_model"),
            shadow_sample_rate=data.get("shadow_sample_rate", 0.0),
            state_version=data["state_version"],
            changed=data.get("changed"),
            raw=data,
        )


@dataclass(frozen=True)
class Status:
    """`GET .../status`: phase, models with their coverage, backfill, shadow metrics, replicas."""

    name: str
    phase: str
    read_model: str
    write_models: tuple[str, ...]
    from_model: str | None
    to_model: str | None
    state_version: int
    models: Mapping[str, Any]
    backfill: Mapping[str, Any]
    shadow: Mapping[str, Any]
    replicas: tuple[Mapping[str, Any], ...]
    adoption: Mapping[str, Any] | None
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Status:
        return cls(
            name=data["name"],
            phase=data["phase"],
            read_model=data["read_model"],
            write_models=tuple(data["write_models"]),
            from_model=data.get("from_model"),
            to_model=data.get("to_model"),
            state_version=data["state_version"],
            models=data.get("models", {}),
            backfill=data.get("backfill", {}),
            shadow=data.get("shadow", {}),
            replicas=tuple(data.get("replicas", ())),
            adoption=data.get("adoption"),
            raw=data,
        )


@dataclass(frozen=True)
class Report:
    """An admin report (plan, verify, backfill setting, adoption): the answer as sent, with
    `passed` for a verification (None for the others)."""

    raw: Mapping[str, Any]

    @property
    def passed(self) -> bool | None:
        return self.raw.get("passed")

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]
