"""`migrate plan`: what a migration to a model would cost, measured on a sample; writes nothing.

A random sample of the collection's texts is embedded with the target model the way the
backfill would (bulk, max_batch texts per request, max_concurrency requests at once for a
remote model). Its measured rate and token count are scaled to the whole collection by
characters; the configured rate limits bound the time from below; the price, if set,
gives the cost. The only side effect is the sample's own tokens, reported as such.
"""

from __future__ import annotations

import math
import time

import asyncpg

from gateway.domain.embedding_reply import estimate_tokens
from gateway.domain.errors import Conflict
from gateway.services.collections import CollectionService
from gateway.services.embedding import EmbeddingService
from gateway.store import plan as plan_sql
from gateway.store.retry import with_connection


async def plan_migration(
    pool: asyncpg.Pool,
    collections: CollectionService,
    embeddings: EmbeddingService,
    name: str,
    to_model: str,
    sample: int | None = None,
) -> dict:
    state = await collections.state(name)
    spec = embeddings.spec(to_model)
    if to_model == state.read_model:
        raise Conflict(f"collection {name!r} is already served by {to_model!r}", code="same_model")
    endpoint = getattr(spec, "endpoint", None)
    if sample is None:
        sample = spec.max_batch * endpoint.max_concurrency if endpoint else 64

    async def read(conn: asyncpg.Connection) -> tuple[tuple[int, int], list[str]]:
        return await plan_sql.document_stats(conn, name), await plan_sql.sample_texts(conn, name, sample)

    (documents, chars), texts = await with_connection(pool, read)
    plan: dict = {
        "collection": name,
        "from_model": state.read_model,
        "to_model": to_model,
        "remote": endpoint is not None,
        "documents": documents,
        "characters": chars,
        "sample": len(texts),
        "sample_seconds": 0.0,
        "sample_tokens": 0,
        "tokens": 0,
        "estimated_seconds": 0.0,
        "price_per_million_tokens": getattr(endpoint, "price_per_million_tokens", None),
        "cost": None,
    }
    if texts:
        started = time.monotonic()
        encoded = await embeddings.embed(to_model, texts, "document", bulk=True)
        elapsed = max(time.monotonic() - started, 1e-6)
        sample_tokens = sum(encoded.tokens) if encoded.tokens else sum(estimate_tokens(t) for t in texts)
        sample_chars = max(1, sum(len(t) for t in texts))
        tokens = math.ceil(sample_tokens * chars / sample_chars)
        seconds = documents / (len(texts) / elapsed)
        if endpoint is not None:  # configured limits bound the time from below
            if endpoint.requests_per_minute:
                seconds = max(seconds, math.ceil(documents / spec.max_batch) / endpoint.requests_per_minute * 60)
            if endpoint.tokens_per_minute:
                seconds = max(seconds, tokens / endpoint.tokens_per_minute * 60)
        plan.update(
            sample_seconds=round(elapsed, 3),
            sample_tokens=sample_tokens,
            tokens=tokens,
            estimated_seconds=round(seconds, 1),
        )
    if plan["price_per_million_tokens"] is not None:
        plan["cost"] = plan["tokens"] / 1e6 * plan["price_per_million_tokens"]
    return plan
