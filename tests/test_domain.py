"""Pure domain logic: identifiers, fingerprints, similarity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.batching import plan_calls
from gateway.domain.errors import InvalidRequest
from gateway.domain.fingerprint import fingerprint
from gateway.domain.identifiers import (
    collection_schema,
    embedding_table,
    validate_collection_name,
    validate_document_id,
)
from gateway.domain.vectors import row_cosines
from gateway.encoders.catalog import CATALOG


@pytest.mark.parametrize("name", ["a", "docs", "my_docs_2", "a" * 48])
def test_valid_collection_names_are_accepted(name):
    assert validate_collection_name(name) == name


@pytest.mark.parametrize("name", ["", "Docs", "1docs", "_docs", "my-docs", "a" * 49, "docs;drop", "dócs", 'a"b'])
def test_invalid_collection_names_are_refused(name):
    with pytest.raises(InvalidRequest):
        validate_collection_name(name)


@pytest.mark.parametrize("doc_id", ["", "x" * 257, "tab\there", "nul\x00"])
def test_invalid_document_ids_are_refused(doc_id):
    with pytest.raises(InvalidRequest):
        validate_document_id(doc_id)


@given(st.text(min_size=1, max_size=200))
def test_embedding_table_names_are_safe_identifiers_for_any_model_key(key):
    name = embedding_table(key)
    assert len(name.encode()) <= 63
    assert all(c.isascii() and (c.isalnum() or c == "_") for c in name)


def test_model_keys_that_slug_alike_get_different_tables():
    assert embedding_table("model-a") != embedding_table("model_a")


def test_collection_schema_is_prefixed_and_validated():
    assert collection_schema("docs") == "dgc_docs"
    with pytest.raises(InvalidRequest):
        collection_schema("Docs")


def test_a_fingerprint_changes_with_any_file_or_parameter_and_not_with_order():
    base = fingerprint({"a": "1", "b": "2"}, {"pooling": "mean", "max_tokens": 128})
    assert base == fingerprint({"b": "2", "a": "1"}, {"max_tokens": 128, "pooling": "mean"})
    assert base != fingerprint({"a": "1", "b": "3"}, {"pooling": "mean", "max_tokens": 128})
    assert base != fingerprint({"a": "1", "b": "2"}, {"pooling": "mean", "max_tokens": 256})


def test_catalog_models_have_distinct_fingerprints():
    prints = [spec.fingerprint for spec in CATALOG.values()]
    assert len(set(prints)) == len(prints)


@given(st.lists(st.floats(-10, 10), min_size=1, max_size=16))
def test_cosine_of_a_vector_with_itself_is_one_or_zero_for_the_zero_vector(vector):
    value = float(row_cosines(np.array([vector]), np.array([vector]))[0])
    if float(np.linalg.norm(np.array(vector, dtype=np.float64))) > 0:
        assert value == pytest.approx(1.0, abs=1e-9)
    else:
        assert value == 0.0


@given(st.lists(st.floats(-10, 10), min_size=1, max_size=16), st.floats(0.1, 100))
def test_cosine_ignores_scale_and_flips_sign_with_the_vector(vector, scale):
    a = np.array([vector])
    if float(np.linalg.norm(a)) < 1e-6:
        return
    assert float(row_cosines(a, a * scale)[0]) == pytest.approx(1.0, abs=1e-9)
    assert float(row_cosines(a, -a)[0]) == pytest.approx(-1.0, abs=1e-9)


@given(
    st.lists(st.integers(1, 600), max_size=200),
    st.integers(1, 64),
    st.one_of(st.none(), st.integers(1, 4096)),
)
def test_a_call_plan_covers_every_text_once_within_both_budgets(costs, max_texts, max_tokens):
    calls = plan_calls(costs, max_texts, max_tokens)
    assert sorted(i for call in calls for i in call) == list(range(len(costs)))
    for call in calls:
        assert 1 <= len(call) <= max_texts
        if max_tokens is not None and len(call) > 1:
            assert len(call) * max(costs[i] for i in call) <= max_tokens


def test_short_texts_share_a_call_and_long_ones_go_a_few_at_a_time():
    assert [len(c) for c in plan_calls([6] * 1000, 256, 2048)] == [256, 256, 256, 232]
    assert [len(c) for c in plan_calls([256] * 20, 256, 2048)] == [8, 8, 4]
    assert plan_calls([5000], 256, 2048) == [[0]]  # over the budget alone: still embedded
