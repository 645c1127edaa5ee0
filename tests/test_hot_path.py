"""The vector-query hot path's shortcuts give exactly the answers of the careful paths they skip."""

from __future__ import annotations

import json
import math
import uuid

import numpy as np
import pytest

from gateway.api import fastjson
from gateway.api.app import create_app
from gateway.api.context import new_request_id
from gateway.api.metrics import Metrics
from gateway.api.requests import _bounded_int, _reject_constant, read_body
from gateway.api.responses import strict_dumps
from gateway.commands.runtime import event_loop_factory
from gateway.config import LimitsConfig, load_settings
from gateway.domain.errors import PayloadTooLarge
from gateway.services.collections import query_vector_array


def standard_loads(raw: bytes):
    return json.loads(raw, parse_constant=_reject_constant, parse_int=_bounded_int)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"vector": [0.1, -0.25, 1e-30, 3.0e38], "model": "m", "k": 10}',
        b'{"k": 123456789012345678}',
        b'{"text": "caf\xc3\xa9 \\u00e9", "metadata": {"a": [1, 2.5, null, true]}}',
        b'{"a": 1, "a": 2}',
        b'  {"x": -0, "y": -0.0, "z": 1E5, "w": 1.5e-400}  ',
        b'{"v": [0.00012345678901234567891234]}',
    ],
)
def test_fast_parsing_agrees_with_the_standard_parser_where_it_is_used(raw):
    fast = fastjson.loads(raw)
    assert fast is not fastjson.NOT_FAST
    assert json.dumps(fast) == json.dumps(standard_loads(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"k": 18446744073709551616}',  # beyond 64 bits: orjson would make it a float
        b'{"k": -9223372036854775809}',
        b"12345678901234567890",
        b'{"k": ' + b"9" * 70 + b"}",  # beyond the API's 64-digit limit
        b'{"v": [NaN]}',
        b'{"v": Infinity}',
        b'{"t": "\\ud800"}',  # a lone surrogate: the standard parser accepts it, later checks refuse it
        b"\xef\xbb\xbf{}",
        b"\xff",
        b'{"a": 1e400}',
        b"[" * 600 + b"]" * 600,
        b"{",
    ],
)
def test_bodies_orjson_would_read_differently_go_the_standard_way(raw):
    assert fastjson.loads(raw) is fastjson.NOT_FAST


@pytest.mark.parametrize(
    "data",
    [
        {"model": "m", "truncated": False, "hits": [{"id": "a", "score": 0.5, "text": "é\u2028", "metadata": {}}]},
        {"a": None, "b": [1, 2.5, "x"]},
        {"big": 2**70},
        {1: "int key"},
    ],
)
def test_fast_writing_gives_the_same_json_as_the_strict_encoder(data):
    assert json.loads(fastjson.dumps(data, strict_dumps)) == json.loads(strict_dumps(data))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_fast_writing_still_refuses_nan_and_infinity(bad):
    with pytest.raises(ValueError):
        fastjson.dumps({"hits": [{"score": bad}]}, strict_dumps)


def careful_unit_vector(vector):
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        as_float32 = np.asarray(vector, dtype=np.float32)
    wide = as_float32.astype(np.float64)
    return (wide / float(np.linalg.norm(wide))).astype(np.float32)


def test_the_query_vector_shortcut_gives_the_careful_paths_vector_bit_for_bit():
    rng = np.random.default_rng(15)
    for exponent in range(-44, 38, 3):
        vector = (rng.standard_normal(384) * 10.0**exponent).tolist()
        got = query_vector_array(vector)
        assert got.dtype == np.float32
        assert np.array_equal(got, careful_unit_vector(vector)), exponent
    assert math.isclose(float(np.linalg.norm(query_vector_array([3e38, 3e38]))), 1.0, rel_tol=1e-6)


def test_the_event_loop_can_be_forced_back_to_asyncios_own(monkeypatch):
    monkeypatch.setenv("DRIFTGATE_EVENT_LOOP", "asyncio")
    assert event_loop_factory() is None


class ChunkedRequest:
    """What read_body uses of a request: its Content-Length (unknown here) and its body, in chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.content_length = None
        self.content = self
        self._chunks = chunks

    async def iter_any(self):
        for chunk in self._chunks:
            yield chunk


BUDGET = 100


@pytest.mark.parametrize(
    "chunks",
    [
        [b"[" + b"0," * 150 + b"0]"],  # one chunk
        [b"[" + b"0," * 60, b"0," * 60, b"0," * 30 + b"0]"],  # over the size bound only in its third chunk
        # the first chunk is under the size bound; the one that crosses it holds only two more commas
        [b"[" + b"0," * 99, b"0,0,0]" + b" " * 200],
    ],
    ids=["one chunk", "three chunks", "commas before the crossing chunk"],
)
async def test_a_body_over_the_value_budget_is_refused_however_it_is_split(chunks):
    limits = LimitsConfig(max_json_values=BUDGET)
    with pytest.raises(PayloadTooLarge) as refused:
        await read_body(ChunkedRequest(chunks), limits, 1 << 20)
    assert refused.value.code == "too_many_values"


@pytest.mark.parametrize(
    "chunks",
    [
        [b"[" + b"0," * 98 + b"0]"],  # 100 values: the budget exactly
        [b'{"text": "' + b"x" * 500, b"y" * 500 + b'"}'],  # long, but two values: never counted by bytes
    ],
    ids=["at the budget", "long text"],
)
async def test_a_body_within_the_value_budget_is_read_whole(chunks):
    assert await read_body(ChunkedRequest(chunks), LimitsConfig(max_json_values=BUDGET), 1 << 20) == b"".join(chunks)


def test_cached_metric_children_are_the_registrys_own():
    metrics = Metrics()
    child = metrics.request_count("POST", "/v1/collections/{collection}/query", "200")
    assert child is metrics.request_count("POST", "/v1/collections/{collection}/query", "200")
    assert child is metrics.requests.labels("POST", "/v1/collections/{collection}/query", "200")
    child.inc()
    metrics.request_latency("POST", "/x").observe(0.002)
    sample = metrics.registry.get_sample_value(
        "driftgate_http_requests_total",
        {"method": "POST", "route": "/v1/collections/{collection}/query", "status": "200"},
    )
    assert sample == 1.0
    assert (
        metrics.registry.get_sample_value(
            "driftgate_http_request_duration_seconds_count", {"method": "POST", "route": "/x"}
        )
        == 1.0
    )


def test_generated_request_ids_are_random_version_4_uuids():
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_the_query_route_is_the_first_one_the_router_tries():
    app = create_app(load_settings(None), "postgresql://unused/unused")
    first = next(iter(app.router.resources()))
    assert first.canonical == "/v1/collections/{collection}/query"
    assert [route.method for route in first] == ["POST"]
