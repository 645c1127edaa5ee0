"""Validation of an OpenAI-compatible /embeddings reply, and token accounting: pure logic.

A provider's reply is trusted for nothing: it must hold exactly one vector per input,
indices 0..n-1 (returned in any order, put back in order here), the declared dimension,
and finite numbers. Anything else is a `BadReply` whose message says what was wrong;
the caller answers an error and stores nothing.
"""

from __future__ import annotations

import base64
import math

import numpy as np

from gateway.domain.errors import BadReply


def parse_embeddings(payload: object, count: int, dim: int) -> tuple[np.ndarray, int | None]:
    """(vectors (count, dim) float32 in input order, usage tokens or None)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise BadReply("reply has no 'data' list")
    data = payload["data"]
    if len(data) != count:
        raise BadReply(f"reply has {len(data)} vectors for {count} inputs")
    vectors = np.empty((count, dim), dtype=np.float32)
    seen: set[int] = set()
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise BadReply(f"data[{position}] is not an object")
        index = item.get("index", position)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count or index in seen:
            raise BadReply(f"data[{position}] has index {index!r}; expected each of 0..{count - 1} once")
        seen.add(index)
        vectors[index] = _vector(item.get("embedding"), dim, index)
    return vectors, _usage(payload.get("usage"))


def _vector(raw: object, dim: int, index: int) -> np.ndarray:
    if isinstance(raw, str):  # encoding_format=base64: little-endian float32
        try:
            array = np.frombuffer(base64.b64decode(raw, validate=True), dtype="<f4")
        except (ValueError, TypeError):
            raise BadReply(f"embedding {index} is not valid base64 float32") from None
    elif isinstance(raw, list):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw):
            raise BadReply(f"embedding {index} holds non-numbers")
        array = np.asarray(raw, dtype=np.float64)
    else:
        raise BadReply(f"embedding {index} is missing or not a list")
    if array.shape != (dim,):
        raise BadReply(f"embedding {index} has {array.size} dimensions, the model declares {dim}")
    if not np.isfinite(array).all():
        raise BadReply(f"embedding {index} holds NaN or infinite values")
    if not array.any():
        raise BadReply(f"embedding {index} is all zeros")
    return array.astype(np.float32)


def _usage(usage: object) -> int | None:
    if isinstance(usage, dict):
        for key in ("prompt_tokens", "total_tokens"):
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return None


def estimate_tokens(text: str) -> int:
    """A provider-neutral token estimate (about 4 characters per token), at least 1."""
    return max(1, math.ceil(len(text) / 4))


def split_tokens(total: int | None, texts: list[str]) -> tuple[int, ...]:
    """Per-text tokens: the reply's total shared in proportion to estimates, else the estimates."""
    estimates = [estimate_tokens(t) for t in texts]
    if total is None:
        return tuple(estimates)
    weight = sum(estimates)
    shares = [total * e // weight for e in estimates]
    for i in range(total - sum(shares)):  # the rounding remainder, one each, so the sum is exact
        shares[i % len(shares)] += 1
    return tuple(shares)
