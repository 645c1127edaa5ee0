"""Adopting an existing pgvector table: the pure part (names, states, the sample verdict).

The source table and its columns come from an operator's request and end up in SQL, so
each name is checked against a strict identifier pattern here, before any catalog lookup,
and is only ever used quoted.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from gateway.domain.errors import InvalidRequest

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# schemas driftgate owns or PostgreSQL reserves: never a source
RESERVED_SCHEMAS = re.compile(r"(driftgate|dgc_.*|pg_.*|information_schema)")


class AdoptionState(enum.StrEnum):
    IMPORTING = "importing"  # copying rows in chunks (resumable from the cursor)
    INDEXING = "indexing"  # the backfill embeds rows without a vector, then the HNSW index is built
    FOLLOWING = "following"  # complete; the source table's changes are applied as they commit
    DONE = "done"  # complete, not following
    STOPPED = "stopped"  # following was stopped: triggers and queue removed
    FAILED = "failed"  # the last attempt failed (`error` says why); retried with backoff


ACTIVE_STATES = (AdoptionState.IMPORTING, AdoptionState.INDEXING, AdoptionState.FOLLOWING, AdoptionState.FAILED)
# an adoption in these states still owns the collection's backfill: no migration may start
BUSY_STATES = (AdoptionState.IMPORTING, AdoptionState.INDEXING)

# id column types whose `::text` cast and comparison operators are PostgreSQL's own (pg_catalog
# base types): an enum, domain, composite or user type could bring a cast the table owner wrote
SAFE_ID_TYPES = frozenset({"text", "varchar", "bpchar", "int2", "int4", "int8", "uuid", "numeric"})

RETRY_FIRST_S, RETRY_MAX_S = 1.0, 300.0


def effective_state(state: str, failed_state: str | None) -> AdoptionState:
    """The step a failed adoption retries (what it was doing when it failed), else its state."""
    if state == AdoptionState.FAILED and failed_state is not None:
        return AdoptionState(failed_state)
    return AdoptionState(state)


def retry_delay(failures: int) -> float:
    """Seconds before retrying after the `failures`-th failure in a row: doubling, capped."""
    return min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** max(0, failures - 1))


def validate_identifier(name: object, what: str) -> str:
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise InvalidRequest(
            f"invalid {what} {name!r}: use a plain SQL identifier (letters, digits, underscores, "
            "not starting with a digit, at most 63 characters)",
            code="invalid_identifier",
        )
    return name


MAX_FILTER_VALUE = 256


@dataclass(frozen=True)
class RowFilter:
    """`column = value`: only the rows of one logical collection in a shared table (e.g. LangChain's
    `langchain_pg_embedding.collection_id`). The value is a parameter cast to the column's type,
    never SQL text."""

    column: str
    value: str

    @classmethod
    def parse(cls, column: object, value: object) -> RowFilter:
        validate_identifier(column, "row filter column")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidRequest(
                f"row filter value {value!r} must be a string or an integer, e.g. the collection_id uuid",
                code="invalid_row_filter",
            )
        text = str(value)
        if not 1 <= len(text) <= MAX_FILTER_VALUE or not text.isprintable():
            raise InvalidRequest(
                f"row filter value must be 1-{MAX_FILTER_VALUE} printable characters", code="invalid_row_filter"
            )
        assert isinstance(column, str)
        return cls(column, text)


@dataclass(frozen=True)
class SourceSpec:
    """What to adopt: `schema.table` and the roles of its columns (all validated identifiers).

    `metadata_json_column` is a json/jsonb column whose object *is* the metadata (LangChain's
    `cmetadata`), merged under the `metadata_columns`; `row_filter` keeps only matching rows.
    """

    schema: str
    table: str
    id_column: str
    text_column: str
    vector_column: str
    metadata_columns: tuple[str, ...] = ()
    metadata_json_column: str | None = None
    row_filter: RowFilter | None = None

    @classmethod
    def parse(
        cls,
        table: str,
        id_column: str,
        text_column: str,
        vector_column: str,
        metadata_columns: list[str] | tuple[str, ...] = (),
        metadata_json_column: str | None = None,
        row_filter: RowFilter | None = None,
    ) -> SourceSpec:
        """Validate every name; `table` is `schema.table` or `table` (schema public)."""
        if not isinstance(table, str):
            raise InvalidRequest("table must be a string such as 'public.items'", code="invalid_identifier")
        parts = table.split(".")
        if len(parts) > 2:
            raise InvalidRequest(f"invalid table {table!r}: write it as schema.table", code="invalid_identifier")
        schema, name = parts if len(parts) == 2 else ("public", parts[0])
        validate_identifier(schema, "schema")
        validate_identifier(name, "table")
        if RESERVED_SCHEMAS.fullmatch(schema):
            raise InvalidRequest(
                f"schema {schema!r} belongs to driftgate or PostgreSQL; it cannot be adopted", code="invalid_identifier"
            )
        columns = [
            validate_identifier(c, role)
            for c, role in ((id_column, "id column"), (text_column, "text column"), (vector_column, "vector column"))
        ]
        meta = tuple(validate_identifier(c, "metadata column") for c in metadata_columns)
        if metadata_json_column is not None:
            meta_json = [validate_identifier(metadata_json_column, "metadata json column")]
        else:
            meta_json = []
        named = columns + list(meta) + meta_json
        if len(set(named)) != len(named):
            raise InvalidRequest(
                "a column is named twice; id, text, vector, metadata and metadata json columns must differ",
                code="invalid_identifier",
            )
        return cls(schema, name, id_column, text_column, vector_column, meta, metadata_json_column, row_filter)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the adoption reads (each must exist)."""
        extra = (self.metadata_json_column,) if self.metadata_json_column else ()
        where = (self.row_filter.column,) if self.row_filter else ()
        return (self.id_column, self.text_column, self.vector_column, *self.metadata_columns, *extra, *where)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class SampleVerdict:
    """Stored vectors compared with the declared model's re-embedding of their texts."""

    sampled: int
    threshold: float
    worst: tuple[tuple[str, float], ...]  # (id, cosine), lowest first, at most 10
    below: int

    @property
    def passed(self) -> bool:
        return self.below == 0


def judge_sample(ids: list[str], cosines: list[float], threshold: float) -> SampleVerdict:
    ranked = sorted(zip(ids, cosines, strict=False), key=lambda pair: pair[1])
    below = sum(1 for _, c in ranked if c < threshold)
    return SampleVerdict(len(ranked), threshold, tuple((i, round(c, 6)) for i, c in ranked[:10]), below)
