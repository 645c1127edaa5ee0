"""Texts per second through `POST /v1/embeddings`, batched by a token budget vs 8 texts per call.

Two workloads per model: 1,000 three-word texts in one request (per-call overhead dominates)
and 64 long texts (four Vaswani abstracts each, past the token limit: compute dominates). Each
is sent to a gateway whose models plan calls by their token budget (the default) and to one
whose models take 8 texts per call (`max_batch_tokens = None`, `max_batch = 8`: the old plan).

    python bench/embeddings_api.py                 # L3 and L6, 3 repeats
    python bench/embeddings_api.py --repeats 1     # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import statistics
import time

from _common import emit, log, machine_info
from _db import Databases, PostgresServer, with_database
from _gateway import Gateway

from gateway.config import Settings, load_settings
from gateway.datasets import vaswani

MODELS = ("paraphrase-MiniLM-L3-v2", "all-MiniLM-L6-v2")


def workloads() -> dict[str, list[str]]:
    words = "radio wave antenna signal noise filter circuit power field measure dielectric".split()
    rng = random.Random(7)
    abstracts = [text for _, text in vaswani(limit=256).corpus]
    return {
        "short_3_words": [" ".join(rng.choice(words) for _ in range(3)) for _ in range(1000)],
        "long_abstracts": [" ".join(abstracts[i : i + 4]) for i in range(0, 256, 4)],
    }


def fixed_8(settings: Settings) -> Settings:
    """The same settings with every catalog model planning 8 texts per call (no token budget)."""
    specs = {k: dataclasses.replace(s, max_batch=8, max_batch_tokens=None) for k, s in settings.model_specs().items()}

    class Fixed(type(settings)):  # type: ignore[misc]
        def model_specs(self):  # noqa: D102
            return specs

    return Fixed.model_construct(**dict(settings))


async def measure(dsn: str, settings: Settings, texts: list[str], model: str, repeats: int) -> float:
    async with Gateway(settings, dsn) as gateway:
        await gateway.call("POST", "/v1/embeddings", {"model": model, "input": texts[:32]})  # load + warm
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            status, body = await gateway.call("POST", "/v1/embeddings", {"model": model, "input": texts})
            times.append(time.perf_counter() - started)
            if status != 200 or len(body["data"]) != len(texts):
                raise RuntimeError(f"/v1/embeddings answered {status}")
    return len(texts) / statistics.median(times)


async def run(repeats: int) -> list[dict]:
    rows = []
    base = load_settings(None, database={"pool_min": 1, "pool_max": 4}, models={"serve": list(MODELS)})
    with PostgresServer() as server:
        async with Databases(server.server_dsn) as databases:
            for model in MODELS:
                for name, texts in workloads().items():
                    speeds = {}
                    for plan, settings in (("fixed_8", fixed_8(base)), ("token_budget", base)):
                        dsn = with_database(server.server_dsn, await databases.create())
                        speeds[plan] = round(await measure(dsn, settings, texts, model, repeats), 1)
                    ratio = round(speeds["token_budget"] / speeds["fixed_8"], 2)
                    log(f"{model} {name}: {speeds} ratio {ratio}")
                    rows.append(
                        {
                            "model": model,
                            "workload": name,
                            "texts": len(texts),
                            "texts_per_s": speeds,
                            "token_budget_over_fixed_8": ratio,
                        }
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed requests per point (median)")
    args = parser.parse_args()
    emit(
        {
            "benchmark": "embeddings_api_token_budget",
            "results": asyncio.run(run(args.repeats)),
            "machine": machine_info(),
        }
    )


if __name__ == "__main__":
    main()
