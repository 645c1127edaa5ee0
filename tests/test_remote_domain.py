"""Pure logic of remote models: the circuit breaker, rate pacing, reply validation, token shares."""

from __future__ import annotations

import math

import pytest

from gateway.domain.breaker import BreakerState, CircuitBreaker
from gateway.domain.embedding_reply import BadReply, parse_embeddings, split_tokens
from gateway.domain.pacing import Pacer


def test_the_breaker_opens_after_consecutive_failures_and_closes_after_a_good_trial():
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=1.0)
    breaker.record_failure(0.0)
    assert breaker.allow(0.1) == (True, 0.0)
    breaker.record_failure(0.1)
    allowed, wait = breaker.allow(0.5)
    assert not allowed and wait == pytest.approx(0.6)
    assert breaker.allow(1.2)[0] and breaker.state == BreakerState.HALF_OPEN
    assert not breaker.allow(1.3)[0]  # one trial at a time
    breaker.record_success()
    assert breaker.state == BreakerState.CLOSED and breaker.allow(1.4)[0]


def test_a_failed_trial_doubles_the_cooldown_and_retry_after_lengthens_it():
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1.0, max_cooldown_s=5.0)
    breaker.record_failure(0.0, retry_after=3.0)
    assert breaker.opened_until == 3.0
    assert breaker.allow(3.0)[0]
    breaker.record_failure(3.0)
    assert breaker.opened_until == 5.0  # 2 x 1.0


def test_a_trial_that_never_reports_frees_the_half_open_slot_after_its_timeout():
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1.0, trial_timeout_s=10.0)
    breaker.record_failure(0.0)
    assert breaker.allow(1.0)[0]
    assert not breaker.allow(5.0)[0]
    assert breaker.allow(11.5)[0]


def test_the_pacer_spreads_requests_over_the_minute_after_a_short_burst():
    pacer = Pacer(per_minute=60, burst_s=1.0)
    delays = [pacer.reserve(0.0) for _ in range(4)]
    assert delays == [0.0, 0.0, 1.0, 2.0]
    assert Pacer(per_minute=0).reserve(0.0, 1e9) == 0.0


def _reply(vectors, **extra):
    return {"data": [{"index": i, "embedding": v} for i, v in vectors], **extra}


def test_a_reply_is_put_back_in_input_order_by_index_with_its_usage():
    vectors, usage = parse_embeddings(_reply([(1, [0.0, 1.0]), (0, [1.0, 0.0])], usage={"prompt_tokens": 7}), 2, 2)
    assert vectors.tolist() == [[1.0, 0.0], [0.0, 1.0]] and usage == 7


@pytest.mark.parametrize(
    "payload, problem",
    [
        ({"nope": 1}, "no 'data'"),
        (_reply([(0, [1.0, 0.0])]), "1 vectors for 2 inputs"),
        (_reply([(0, [1.0, 0.0]), (0, [0.0, 1.0])]), "index 0"),
        (_reply([(0, [1.0, 0.0, 0.0]), (1, [0.0, 1.0, 0.0])]), "3 dimensions"),
        (_reply([(0, [1.0, math.nan]), (1, [0.0, 1.0])]), "NaN"),
        (_reply([(0, ["a", 1.0]), (1, [0.0, 1.0])]), "non-numbers"),
        (_reply([(0, [0.0, 0.0]), (1, [0.0, 1.0])]), "all zeros"),
    ],
)
def test_a_malformed_reply_names_its_problem(payload, problem):
    with pytest.raises(BadReply, match=problem):
        parse_embeddings(payload, 2, 2)


def test_reply_tokens_are_shared_by_text_length_and_sum_exactly():
    shares = split_tokens(10, ["a" * 40, "b" * 4])
    assert sum(shares) == 10 and shares[0] > shares[1]
    assert split_tokens(None, ["a" * 8]) == (2,)
