"""Ranking comparison and IR metrics: bounds, identities and symmetry (parametrize + hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.ranking import (
    kendall_tau,
    mrr_at_k,
    ndcg_at_k,
    overlap_at_k,
    rbo,
    recall_at_k,
    score_shift,
    top1_agreement,
)

ranked_lists = st.lists(st.sampled_from([f"d{i}" for i in range(30)]), max_size=15, unique=True)


@given(ranked_lists, ranked_lists)
def test_every_comparison_stays_within_its_bounds_and_is_symmetric_where_it_should_be(a, b):
    assert 0.0 <= overlap_at_k(a, b, 10) <= 1.0
    assert overlap_at_k(a, b, 10) == overlap_at_k(b, a, 10)
    assert 0.0 <= rbo(a, b) <= 1.0
    assert rbo(a, b) == pytest.approx(rbo(b, a))
    tau = kendall_tau(a, b)
    assert tau is None or -1.0 <= tau <= 1.0
    assert tau == (None if kendall_tau(b, a) is None else pytest.approx(kendall_tau(b, a)))


@given(ranked_lists.filter(lambda xs: len(xs) >= 2))
def test_identical_lists_agree_perfectly(a):
    assert overlap_at_k(a, a, 10) == 1.0
    assert rbo(a, a) == pytest.approx(1.0)
    assert kendall_tau(a, a) == 1.0
    assert top1_agreement(a, a)


@pytest.mark.parametrize(("a", "b"), [(["a", "b", "c"], ["x", "y", "z"]), (["a"], ["b"])])
def test_disjoint_lists_do_not_overlap_at_all(a, b):
    assert overlap_at_k(a, b, 10) == 0.0
    assert rbo(a, b) == 0.0
    assert kendall_tau(a, b) is None
    assert not top1_agreement(a, b)


def test_a_reversed_list_has_tau_minus_one_and_full_overlap_but_lower_rbo():
    a = ["a", "b", "c", "d"]
    assert kendall_tau(a, a[::-1]) == -1.0
    assert overlap_at_k(a, a[::-1], 4) == 1.0
    assert rbo(a, a[::-1]) < rbo(a, a)


def test_rbo_weighs_the_top_of_the_list_more():
    base = ["a", "b", "c", "d", "e", "f"]
    swap_top = ["b", "a", "c", "d", "e", "f"]
    swap_bottom = ["a", "b", "c", "d", "f", "e"]
    assert rbo(base, swap_top) < rbo(base, swap_bottom) < 1.0


def test_empty_lists():
    assert overlap_at_k([], [], 10) == 1.0 and rbo([], []) == 1.0
    assert rbo(["a"], []) == 0.0 and score_shift([], [0.5]) is None


def test_score_shift_is_shadow_minus_read():
    assert score_shift([0.8, 0.6], [0.5, 0.3]) == pytest.approx(-0.3)


@pytest.mark.parametrize(
    ("ranked", "relevant", "ndcg", "recall", "mrr"),
    [
        (["a", "b"], {"a"}, 1.0, 1.0, 1.0),
        (["x", "a"], {"a"}, 1 / 1.5849625007211563, 1.0, 0.5),
        (["x", "y"], {"a"}, 0.0, 0.0, 0.0),
        (
            ["a", "x", "b"],
            {"a", "b", "c", "d"},
            (1 + 0.5) / (1 + 0.6309297535714575 + 0.5 + 0.43067655807339306),
            0.5,
            1.0,
        ),
    ],
)
def test_ir_metrics_on_known_rankings(ranked, relevant, ndcg, recall, mrr):
    assert ndcg_at_k(ranked, relevant) == pytest.approx(ndcg)
    assert recall_at_k(ranked, relevant) == pytest.approx(recall)
    assert mrr_at_k(ranked, relevant) == pytest.approx(mrr)


@given(ranked_lists, st.sets(st.sampled_from([f"d{i}" for i in range(30)]), max_size=10))
def test_ir_metrics_are_between_zero_and_one(ranked, relevant):
    for metric in (ndcg_at_k, recall_at_k, mrr_at_k):
        assert 0.0 <= metric(ranked, relevant) <= 1.0 + 1e-12
