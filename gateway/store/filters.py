"""A parsed metadata filter (domain/filters.py) as a parameterised SQL condition over JSONB.

Nothing from the filter is ever spliced into the SQL text: paths travel as `text[]`
parameters, operands as `jsonb`, `numeric`, `text`, `boolean` or `timestamptz` parameters.
Every condition evaluates to true or false, never NULL, so that `NOT` of a condition matches
exactly the documents the condition does not (a missing key yields false, not NULL).
Equality is JSON containment (`metadata @> ...`), which the GIN `jsonb_path_ops` index on
every documents table serves.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from gateway.domain.filters import ORDERING, And, Compare, Exists, Filter, In, Not, Op, Or, as_date

_SQL_OPS = {Op.GT: ">", Op.GTE: ">=", Op.LT: "<", Op.LTE: "<="}
_TYPES = {
    bool: ("boolean", "boolean"),
    str: ("string", "text"),
    int: ("number", "numeric"),
    float: ("number", "numeric"),
}


class _Compiler:
    def __init__(self, params: list, column: str) -> None:
        self.params = params
        self.column = column
        self._paths: dict[tuple[str, ...], str] = {}

    def param(self, value: Any, cast: str) -> str:
        self.params.append(value)
        return f"${len(self.params)}::{cast}"

    def value(self, path: tuple[str, ...]) -> str:
        """The JSON value at `path` (NULL when missing), one parameter per distinct path."""
        if path not in self._paths:
            self._paths[path] = f"({self.column} #> {self.param(list(path), 'text[]')})"
        return self._paths[path]

    def contains(self, path: tuple[str, ...], value: Any) -> str:
        nested: Any = value
        for key in reversed(path):
            nested = {key: nested}
        return f"{self.column} @> {self.param(json.dumps(nested), 'jsonb')}"

    def compile(self, node: Filter) -> str:
        if isinstance(node, And):
            return "(" + " AND ".join(self.compile(c) for c in node.children) + ")" if node.children else "true"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.compile(c) for c in node.children) + ")"
        if isinstance(node, Not):
            return f"(NOT {self.compile(node.child)})"
        if isinstance(node, Exists):
            return f"({self.value(node.path)} IS {'NOT ' if node.present else ''}NULL)"
        if isinstance(node, In):
            matches = " OR ".join(self.equals(node.path, v) for v in node.values) or "false"
            return f"(NOT ({matches}))" if node.negate else f"({matches})"
        if node.op is Op.EQ:
            return self.equals(node.path, node.value)
        if node.op is Op.NE:
            return f"(NOT {self.equals(node.path, node.value)})"
        return self.ordering(node)

    def equals(self, path: tuple[str, ...], value: Any) -> str:
        if value is None:
            v = self.value(path)
            return f"({v} IS NULL OR {v} = 'null'::jsonb)"
        if isinstance(value, list | dict):
            return f"({self.contains(path, value)})"
        # the value itself, or an array that holds it (MongoDB's rule for arrays)
        found = f"{self.contains(path, value)} OR {self.contains(path, [value])}"
        date = as_date(value)
        if date is not None:
            found += f" OR COALESCE({self.date_of(path)} = {self.param(date, 'timestamptz')}, false)"
        return f"({found})"

    def date_of(self, path: tuple[str, ...]) -> str:
        v = self.value(path)
        return f"driftgate.iso_timestamp(CASE WHEN jsonb_typeof({v}) = 'string' THEN {v} #>> '{{}}' END)"

    def ordering(self, node: Compare) -> str:
        assert node.op in ORDERING
        if node.value is None:  # MongoDB: $gte/$lte null are $eq null; $gt/$lt null match nothing
            return self.equals(node.path, None) if node.op in (Op.GTE, Op.LTE) else "false"
        sql_op = _SQL_OPS[node.op]
        date = as_date(node.value)
        if date is not None:
            return f"COALESCE({self.date_of(node.path)} {sql_op} {self.param(date, 'timestamptz')}, false)"
        v = self.value(node.path)
        json_type, cast = _TYPES[type(node.value)]
        if cast == "text":
            left, right = f"({v} #>> '{{}}') COLLATE \"C\"", self.param(node.value, "text")
        elif cast == "numeric":
            left, right = f"({v})::numeric", self.param(Decimal(str(node.value)), "numeric")
        else:
            left, right = f"({v})::boolean", self.param(node.value, "boolean")
        return f"COALESCE(CASE WHEN jsonb_typeof({v}) = '{json_type}' THEN {left} {sql_op} {right} END, false)"


def compile_filter(node: Filter, params: list, column: str = "d.metadata") -> str:
    """A SQL condition for `node` over the jsonb `column`; appends its parameters to `params`."""
    return _Compiler(params, column).compile(node)
