"""The metadata filter language: every operator against real PostgreSQL, its negation, hostile input.

One gateway serves the module (a handful of documents with metadata of every type); filters
go through the client to `documents:count`, `documents:list`, `documents:delete` and `query`.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.client import Client
from gateway.client.errors import BadRequest, InvalidFilter
from gateway.domain.errors import InvalidFilter as DomainInvalidFilter
from gateway.domain.filters import MAX_DEPTH, And, Compare, Not, Op, as_date, parse_filter
from tests.helpers import L3
from tests.live import ServerThread, module_database

DOCS = {
    "a": {"n": 1, "s": "apple", "b": True, "d": "2024-01-15", "tags": ["x", "y"], "nested": {"k": "v1", "num": 10}},
    "b": {"n": 2.5, "s": "banana", "b": False, "d": "2024-03-01T12:00:00Z", "tags": ["y"], "nested": {"k": "v2"}},
    "c": {"n": "3", "s": "cherry", "d": "not a date", "nested": {"num": 30}},
    "d": {"n": None, "s": None},
    "e": {},
    "f": {"n": 10, "s": "Zebra", "b": True, "d": "2023-12-31T23:00:00-02:00", "tags": []},
}
ALL = set(DOCS)


@pytest.fixture(scope="module")
def dg(server_dsn):
    server = ServerThread(module_database(server_dsn, "filters"), backfill={"enabled": False}).start()
    with Client(server.url, timeout=120) as client:
        client.create_collection("docs", L3)
        client.put_documents("docs", [{"id": i, "text": f"document {i}", "metadata": m} for i, m in DOCS.items()])
        yield client
    server.stop()


def matching(dg: Client, flt: dict) -> set[str]:
    ids = {d.id for d in dg.iter_documents("docs", flt, page_size=2)}
    assert dg.count_documents("docs", flt) == len(ids)
    return ids


CASES = [
    ({"s": "apple"}, "a"),
    ({"n": {"$eq": 1}}, "a"),
    ({"n": 1.0}, "a"),  # numbers compare as numbers
    ({"n": {"$ne": 1}}, "bcdef"),  # $ne also matches a missing key
    ({"n": {"$gt": 2}}, "bf"),  # "3" is a string: never compared with a number
    ({"n": {"$gte": 2.5}}, "bf"),
    ({"n": {"$lt": 2.5}}, "a"),
    ({"n": {"$lte": 2.5}}, "ab"),
    ({"s": {"$gt": "b"}}, "bc"),  # strings by code point: "Zebra" < "b"
    ({"n": {"$in": [1, 10, "3"]}}, "acf"),
    ({"n": {"$nin": [1, 10]}}, "bcde"),
    ({"n": {"$in": []}}, ""),
    ({"n": {"$nin": []}}, "abcdef"),
    ({"tags": "y"}, "ab"),  # an array matches $eq when it holds the value
    ({"tags": {"$in": ["x"]}}, "a"),
    ({"tags": {"$ne": "y"}}, "cdef"),
    ({"tags": ["x", "y"]}, "a"),  # an array operand: the value holds all of it
    ({"n": {"$exists": True}}, "abcdf"),  # null is present
    ({"n": {"$exists": False}}, "e"),
    ({"n": None}, "de"),  # null matches null or missing
    ({"n": {"$ne": None}}, "abcf"),
    ({"n": {"$gt": None}}, ""),
    ({"n": {"$gte": None}}, "de"),
    ({"b": True}, "af"),
    ({"b": {"$lt": True}}, "b"),
    ({"nested.k": "v1"}, "a"),
    ({"nested": {"k": "v2"}}, "b"),  # the old nested equality form
    ({"nested.num": {"$gte": 10}}, "ac"),
    ({"d": {"$gte": "2024-01-01"}}, "abf"),  # f is 2024-01-01T01:00Z
    ({"d": {"$lt": "2024-01-02"}}, "f"),
    ({"d": "2024-03-01T13:00:00+01:00"}, "b"),  # the same instant
    ({"d": {"$gt": "m"}}, "c"),  # a non-date operand compares strings
    ({"$and": [{"b": True}, {"n": {"$gt": 5}}]}, "f"),
    ({"$or": [{"s": "apple"}, {"s": "banana"}]}, "ab"),
    ({"$not": {"n": {"$gt": 2}}}, "acde"),
    ({"n": {"$not": {"$gt": 2}}}, "acde"),
    ({"n": {"$gt": 0, "$lt": 5}}, "ab"),
    ({"s": "apple", "b": True}, "a"),
    ({}, "abcdef"),
    ({"s": "it's; DROP TABLE documents; --"}, ""),
]


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=[json.dumps(c[0]) for c in CASES])
def test_each_operator_matches_the_documents_mongodb_would(dg, flt, expected):
    assert matching(dg, flt) == set(expected)
    assert matching(dg, {"$not": flt}) == ALL - set(expected)


def test_a_query_returns_only_the_documents_its_filter_matches(dg):
    result = dg.query("docs", text="document", k=10, filter={"tags": {"$in": ["x", "y"]}})
    assert {h.id for h in result.hits} == {"a", "b"}
    result = dg.query("docs", text="document", k=10, filter={"$not": {"tags": {"$in": ["x", "y"]}}})
    assert {h.id for h in result.hits} == {"c", "d", "e", "f"}


def test_listing_pages_through_the_matches_in_id_order_with_an_opaque_cursor(dg):
    first = dg.list_documents("docs", {"n": {"$exists": True}}, limit=2)
    assert [d.id for d in first.documents] == ["a", "b"] and first.next_cursor
    second = dg.list_documents("docs", {"n": {"$exists": True}}, limit=2, cursor=first.next_cursor)
    assert [d.id for d in second.documents] == ["c", "d"]
    last = dg.list_documents("docs", {"n": {"$exists": True}}, limit=2, cursor=second.next_cursor)
    assert [d.id for d in last.documents] == ["f"] and last.next_cursor is None
    with pytest.raises(BadRequest) as bad:
        dg.list_documents("docs", cursor="not-a-cursor")
    assert bad.value.code == "invalid_cursor"


# -- hostile and wrong filters -------------------------------------------------------------

WRONG = [
    ({"n": {"$where": "1"}}, "filter.n.$where"),
    ({"$nor": []}, "filter.$nor"),
    ({"a'b": 1}, "filter.a'b"),
    ({"a..b": 1}, "filter.a..b"),
    ({"n": {"$in": 5}}, "filter.n.$in"),
    ({"n": {"$gt": [1]}}, "filter.n.$gt"),
    ({"n": {"$exists": 1}}, "filter.n.$exists"),
    ({"$and": {}}, "filter.$and"),
    ({"$or": [1]}, "filter.$or.0"),
    ({"n": {"$gt": 1, "k": 2}}, "filter.n"),
    ({"$not": 3}, "filter.$not"),
]


@pytest.mark.parametrize(("flt", "path"), WRONG, ids=[json.dumps(w[0]) for w in WRONG])
def test_a_wrong_filter_gets_400_invalid_filter_naming_the_path(dg, flt, path):
    with pytest.raises(InvalidFilter) as refused:
        dg.count_documents("docs", flt)
    assert refused.value.status == 400 and path in refused.value.message
    assert dg.count_documents("docs") == len(DOCS)  # nothing lost


def test_deep_nesting_and_huge_filters_are_refused_not_run(dg):
    deep: dict = {"n": 1}
    for _ in range(MAX_DEPTH + 2):
        deep = {"$not": deep}
    with pytest.raises(InvalidFilter, match="nested more than"):
        dg.count_documents("docs", deep)
    with pytest.raises(InvalidFilter, match="more than"):
        dg.count_documents("docs", {"n": {"$in": list(range(5000))}})


def test_deleting_by_an_empty_filter_is_refused_and_by_a_filter_deletes_only_its_matches(dg):
    with pytest.raises(InvalidFilter, match="every document"):
        dg.delete_documents("docs", filter={})
    dg.put_documents("docs", [{"id": f"tmp{i}", "text": "scratch", "metadata": {"tmp": i}} for i in range(3)])
    assert dg.delete_documents("docs", filter={"tmp": {"$gte": 1}}) == 2
    assert dg.get_documents("docs", ["tmp0", "tmp1", "tmp2"])[0].id == "tmp0"
    assert dg.delete_documents("docs", ids=["tmp0", "missing"]) == 1
    assert dg.count_documents("docs") == len(DOCS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
keys = st.sampled_from(["n", "s", "b", "d", "tags", "nested.k", "nested.num", "missing"])
operands = (
    st.none()
    | st.booleans()
    | st.integers(-5, 20)
    | st.floats(-5, 20)
    | st.sampled_from(["apple", "b", "2024-01-01", "2024-03-01T12:00:00Z", "y", "3"])
)


def filters(depth: int = 2):
    leaf = st.one_of(
        st.builds(lambda k, v: {k: v}, keys, operands),
        st.builds(lambda k, o, v: {k: {o: v}}, keys, st.sampled_from([op.value for op in Op]), operands),
        st.builds(lambda k, o, v: {k: {o: v}}, keys, st.sampled_from(["$in", "$nin"]), st.lists(operands, max_size=3)),
        st.builds(lambda k, v: {k: {"$exists": v}}, keys, st.booleans()),
    )
    if depth == 0:
        return leaf
    inner = filters(depth - 1)
    return st.one_of(
        leaf,
        st.builds(lambda fs: {"$and": fs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda fs: {"$or": fs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda f: {"$not": f}, inner),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(flt=filters())
def test_a_filter_and_its_negation_split_the_collection_exactly(dg, flt):
    matched = matching(dg, flt)
    assert matched | matching(dg, {"$not": flt}) == ALL
    assert not matched & matching(dg, {"$not": flt})


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(flt=st.dictionaries(st.text(max_size=10) | st.sampled_from(["$and", "$or", "$not", "$in"]), json_values))
def test_any_json_filter_gets_an_answer_or_a_clear_400_never_a_500(dg, flt):
    try:
        dg.count_documents("docs", flt)
    except BadRequest as refused:
        assert refused.code in ("invalid_filter", "invalid_text", "metadata_too_large"), refused
        assert refused.message


# -- the parsed tree (pure) ----------------------------------------------------------------


def test_the_old_equality_form_is_the_implicit_eq_of_the_language():
    assert parse_filter({"lang": "en"}) == Compare(("lang",), Op.EQ, "en")
    assert parse_filter({"a": {"b": 1}, "c": {"$not": {"$lt": 2}}}) == And(
        (Compare(("a", "b"), Op.EQ, 1), Not(Compare(("c",), Op.LT, 2)))
    )


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2024-01-15", "2024-01-15T00:00:00+00:00"),
        ("2024-01-15T10:20", "2024-01-15T10:20:00+00:00"),
        ("2024-01-15 10:20:30.5+02:00", "2024-01-15T10:20:30.500000+02:00"),
        ("2024-13-45", None),
        ("15/01/2024", None),
        ("20240115", None),
    ],
)
def test_only_iso_8601_strings_are_dates(text, iso):
    parsed = as_date(text)
    assert (parsed.isoformat() if parsed else None) == iso


def test_a_nul_character_or_a_huge_integer_in_an_operand_is_refused():
    with pytest.raises(DomainInvalidFilter, match="filter.s.\\$eq"):
        parse_filter({"s": {"$eq": "a\x00b"}})
    with pytest.raises(DomainInvalidFilter, match="out of range"):
        parse_filter({"n": 10**40})
