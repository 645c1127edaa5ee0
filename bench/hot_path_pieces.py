#!/usr/bin/env python
"""Benchmark: the CPU of each piece of a vector query the gateway now does differently, before and after.

Not a test. Prints one JSON object to stdout. Each pair runs in this one process, the old way
and the new way in turn (--repeats rounds, the best round kept), so other load on the machine
moves both alike: what `bench/gateway_overhead.py` measures end to end, taken apart.

    python bench/hot_path_pieces.py > bench/results/bench-hot-path-pieces.json

Pieces: the three labelled-metric lookups per query (prometheus `labels()` against the cached
children, api/metrics.py Children), the request id (uuid4().hex against api/context.py), the
value-count scan of a 384-float body (every body against only those that could be over
limits.max_json_values), ten hits' empty metadata (json.loads against the "{}" shortcut),
ten hits (frozen dataclass against the named tuple), and route resolution of the query path
(registered after the other collection routes against first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import timeit
import uuid
from dataclasses import dataclass

from _common import emit, load_average, machine_info
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.api import admin, adoption, bulk, data_plane, embeddings, health, models, openapi
from gateway.api.app import create_app
from gateway.api.context import new_request_id
from gateway.api.metrics import Metrics
from gateway.config import load_settings
from gateway.store.documents import Hit, _metadata

ROUTE = "/v1/collections/{collection}/query"


@dataclass(frozen=True)
class FrozenHit:  # what store/documents.py Hit was
    id: str
    score: float
    text: str
    metadata: dict


def best_us(fn, number: int, repeats: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeats)) / number * 1e6


def old_route_order() -> web.Application:
    app = web.Application()
    for table in (admin.routes, bulk.routes, adoption.routes, data_plane.routes, data_plane.query_routes):
        app.add_routes(table)
    for table in (embeddings.routes, health.routes, models.routes, openapi.routes):
        app.add_routes(table)
    return app


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--number", type=int, default=5000, help="calls per round")
    p.add_argument("--repeats", type=int, default=9, help="rounds (the best is kept)")
    args = p.parse_args(argv)
    n, r = args.number, args.repeats
    rng = random.Random(21)
    body = json.dumps({"vector": [rng.uniform(-0.2, 0.2) for _ in range(384)], "model": "m", "k": 10}).encode()
    metrics = Metrics()
    loop = asyncio.new_event_loop()
    request = make_mocked_request("POST", "/v1/collections/c/query")
    old_app, new_app = old_route_order(), create_app(load_settings(None), "postgresql://unused/unused")

    def resolve(app: web.Application):
        return lambda: loop.run_until_complete(app.router.resolve(request))

    pairs = {
        "metric_lookups_x3": (
            lambda: (
                metrics.requests.labels("POST", ROUTE, "200"),
                metrics.latency.labels("POST", ROUTE),
                metrics.query_latency.labels("c", "m"),
            ),
            lambda: (
                metrics.request_count("POST", ROUTE, "200"),
                metrics.request_latency("POST", ROUTE),
                metrics.query_latency_of("c", "m"),
            ),
        ),
        "request_id": (lambda: uuid.uuid4().hex, new_request_id),
        "value_count_scan_384_floats": (
            lambda: body.count(b",") + body.count(b'"'),
            lambda: len(body) // 2 + 1 <= 200_000,
        ),
        "empty_metadata_x10": (
            lambda: [json.loads("{}") for _ in range(10)],
            lambda: [_metadata("{}") for _ in range(10)],
        ),
        "hits_x10": (
            lambda: [FrozenHit("a", 0.5, "t", {}) for _ in range(10)],
            lambda: [Hit("a", 0.5, "t", {}) for _ in range(10)],
        ),
        "route_resolution": (resolve(old_app), resolve(new_app)),
    }
    pieces = {}
    for name, (old, new) in pairs.items():
        before, after = best_us(old, n, r), best_us(new, n, r)
        pieces[name] = {
            "before_us": round(before, 2),
            "after_us": round(after, 2),
            "saved_us": round(before - after, 2),
        }
    loop.close()
    emit(
        {
            "benchmark": "hot_path_pieces",
            "machine": machine_info(),
            "config": {"number": n, "repeats": r},
            "pieces": pieces,
            "saved_us_per_vector_query": round(sum(p["saved_us"] for p in pieces.values()), 2),
            "load_average": load_average(),
            "notes": [
                "best round of each; route resolution includes one run_until_complete on both sides",
                "the end-to-end figure is bench/gateway_overhead.py's added p50 at one connection",
            ],
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
