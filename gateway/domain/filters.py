"""The metadata filter language: a parsed, validated tree (pure; SQL lives in store/filters.py).

The shape is MongoDB's query language, restricted to metadata:

- ``{"lang": "en"}`` is ``{"lang": {"$eq": "en"}}`` (the old equality form keeps working);
  several keys in one object are an implicit ``$and``; a value that is an object of plain
  keys is a nested path (``{"a": {"b": 1}}`` is ``{"a.b": 1}``).
- Paths are dotted (``author.name``); each segment is 1-64 word characters or ``- : @``.
- Operators: ``$eq $ne $gt $gte $lt $lte $in $nin $exists`` on a path, ``$and $or`` over a
  list of filters, ``$not`` over a filter (top level) or over a path's operators.

Semantics (as MongoDB's):
- A comparison matches only values of the operand's type: numbers with numbers, strings with
  strings, booleans with booleans. An operand string that parses as ISO-8601 (``2024-05-01``,
  ``2024-05-01T12:00:00Z``) is a date: it compares as a timestamp with metadata strings that
  are ISO-8601 dates (others never match); a date without an offset is UTC.
- ``$eq``/``$in`` also match an array value that contains the operand. An array or object
  operand of ``$eq`` matches a value that contains it (JSON containment).
- ``$eq: null`` matches a missing key or a null; ``$ne: null`` a present, non-null one.
  ``$gte``/``$lte`` null are ``$eq`` null; ``$gt``/``$lt`` null match nothing.
- ``$ne`` and ``$nin`` also match documents that lack the key; ``$not`` matches exactly the
  documents its filter does not match (a missing key never drops a document out of both).
- ``$exists: true`` matches a present key, even one holding null.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from gateway.domain.errors import InvalidFilter

MAX_DEPTH = 16
MAX_NODES = 2_000  # conditions and operands together; each becomes at most two SQL parameters
MAX_PATH_SEGMENTS = 16
_SEGMENT = re.compile(r"[\w\-:@]{1,64}")
# the same grammar as driftgate.iso_timestamp() in store/schema.py: both sides must agree on what a date is
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?)?")

Scalar = str | int | float | bool | None


class Op(StrEnum):
    EQ = "$eq"
    NE = "$ne"
    GT = "$gt"
    GTE = "$gte"
    LT = "$lt"
    LTE = "$lte"


ORDERING = (Op.GT, Op.GTE, Op.LT, Op.LTE)


@dataclass(frozen=True)
class Compare:
    """`path op value`; `value` is a scalar, a list or a dict (containment, $eq/$ne only)."""

    path: tuple[str, ...]
    op: Op
    value: Any

    @property
    def date(self) -> datetime | None:
        return as_date(self.value)


@dataclass(frozen=True)
class In:
    path: tuple[str, ...]
    values: tuple[Scalar, ...]
    negate: bool  # $nin


@dataclass(frozen=True)
class Exists:
    path: tuple[str, ...]
    present: bool


@dataclass(frozen=True)
class And:
    children: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    child: Filter


Filter = Compare | In | Exists | And | Or | Not
_PATH_OPS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$not"}


def as_date(value: Any) -> datetime | None:
    """The timestamp an ISO-8601 string stands for (naive means UTC); None for anything else."""
    if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace(" ", "T", 1) if len(value) > 10 else value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_filter(raw: Any) -> Filter:
    """Parse and validate a filter object; raises InvalidFilter naming the wrong path."""
    budget = [MAX_NODES]
    return _Parser(budget).document(raw, "filter", (), 0)


class _Parser:
    def __init__(self, budget: list[int]) -> None:
        self._budget = budget

    def _spend(self, where: str, n: int = 1) -> None:
        self._budget[0] -= n
        if self._budget[0] < 0:
            raise InvalidFilter(f"{where}: the filter has more than {MAX_NODES} conditions and operands; simplify it")

    def document(self, raw: Any, where: str, prefix: tuple[str, ...], depth: int) -> Filter:
        """An object of `path: condition` and `$and/$or/$not` entries (implicitly ANDed)."""
        if depth > MAX_DEPTH:
            raise InvalidFilter(f"{where}: the filter is nested more than {MAX_DEPTH} levels deep; flatten it")
        if not isinstance(raw, dict):
            raise InvalidFilter(f"{where}: expected an object of metadata paths and operators, got {_kind(raw)}")
        parts: list[Filter] = []
        for key, value in raw.items():
            self._spend(where)
            here = f"{where}.{key}"
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise InvalidFilter(f"{here}: expected a non-empty array of filters")
                children = tuple(self.document(v, f"{here}.{i}", prefix, depth + 1) for i, v in enumerate(value))
                parts.append(And(children) if key == "$and" else Or(children))
            elif key == "$not":
                parts.append(Not(self.document(value, here, prefix, depth + 1)))
            elif key.startswith("$"):
                raise InvalidFilter(f"{here}: unknown operator {key!r} here; use a metadata path, $and, $or or $not")
            else:
                parts.append(self.condition(value, here, prefix + _path(key, here), depth + 1))
        if not parts:
            return And(())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def condition(self, raw: Any, where: str, path: tuple[str, ...], depth: int) -> Filter:
        """The value of a path: an operand ($eq), an object of operators, or a nested object of paths."""
        if len(path) > MAX_PATH_SEGMENTS:
            raise InvalidFilter(f"{where}: the path has more than {MAX_PATH_SEGMENTS} segments")
        if depth > MAX_DEPTH:
            raise InvalidFilter(f"{where}: the filter is nested more than {MAX_DEPTH} levels deep; flatten it")
        if not isinstance(raw, dict) or not raw:
            return Compare(path, Op.EQ, self.operand(raw, where, containers=True))
        keys = list(raw)
        if not any(k.startswith("$") for k in keys):
            return self.document(raw, where, path, depth)
        if not all(k.startswith("$") for k in keys):
            raise InvalidFilter(f"{where}: mixes operators and plain keys; put nested paths in their own object")
        parts: list[Filter] = []
        for key, value in raw.items():
            self._spend(where)
            here = f"{where}.{key}"
            if key not in _PATH_OPS:
                raise InvalidFilter(f"{here}: unknown operator; use one of {', '.join(sorted(_PATH_OPS))}")
            if key in ("$in", "$nin"):
                if not isinstance(value, list):
                    raise InvalidFilter(f"{here}: expected an array of values, got {_kind(value)}")
                self._spend(here, len(value))
                values = tuple(self.operand(v, f"{here}.{i}", containers=False) for i, v in enumerate(value))
                parts.append(In(path, values, negate=key == "$nin"))
            elif key == "$exists":
                if not isinstance(value, bool):
                    raise InvalidFilter(f"{here}: expected true or false, got {_kind(value)}")
                parts.append(Exists(path, value))
            elif key == "$not":
                if not isinstance(value, dict) or not value or not all(k.startswith("$") for k in value):
                    raise InvalidFilter(f'{here}: expected an object of operators, e.g. {{"$gt": 5}}')
                parts.append(Not(self.condition(value, here, path, depth + 1)))
            else:
                op = Op(key)
                containers = op in (Op.EQ, Op.NE)
                parts.append(Compare(path, op, self.operand(value, here, containers=containers)))
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def operand(self, value: Any, where: str, *, containers: bool) -> Any:
        if value is None or isinstance(value, bool | str | int):
            _check_scalar(value, where)
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidFilter(f"{where}: numbers must be finite")
            return value
        if containers and isinstance(value, list | dict):
            self._spend(where, _size(value, where))
            return value
        allowed = (
            "a string, number, boolean, null, array or object" if containers else "a string, number, boolean or null"
        )
        raise InvalidFilter(f"{where}: expected {allowed}, got {_kind(value)}")


def _check_scalar(value: Any, where: str) -> None:
    if isinstance(value, str) and ("\x00" in value or _has_surrogate(value)):
        raise InvalidFilter(
            f"{where}: the string holds a NUL character or a lone surrogate, which metadata never holds"
        )
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**38:
        raise InvalidFilter(f"{where}: the number is out of range (|x| < 1e38)")


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _size(value: Any, where: str) -> int:
    """Count the scalars of a container operand, refusing values PostgreSQL cannot hold."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidFilter(f"{where}: numbers must be finite")
        else:
            _check_scalar(item, where)
    return count


def _path(key: str, where: str) -> tuple[str, ...]:
    segments = tuple(key.split("."))
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise InvalidFilter(
                f"{where}: {key!r} is not a metadata path; use dot-separated keys of 1-64 letters, digits or _ - : @"
            )
    return segments


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
