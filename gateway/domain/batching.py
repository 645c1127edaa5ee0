"""How texts are grouped into inference calls: by a token budget, as a pure function.

A call costs about (texts x longest text) token positions, padding included; per-call
overhead is fixed. So many short texts should share a call, and long ones go a few at a time
(as Text Embeddings Inference's `max_batch_tokens` does). Texts are grouped in ascending
cost order so that each call pads little.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_calls(costs: Sequence[int], max_texts: int, max_tokens: int | None) -> list[list[int]]:
    """Indices of `costs` grouped into calls: ascending cost, at most `max_texts` per call and,
    when `max_tokens` is set, at most `max_tokens` padded positions (texts x the call's
    largest cost) per call; a single text over the budget gets a call of its own."""
    if max_texts < 1:
        raise ValueError("max_texts must be >= 1")
    order = sorted(range(len(costs)), key=lambda i: costs[i])
    calls: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # ascending order: the text being added is the call's largest
        over_budget = max_tokens is not None and (len(current) + 1) * max(costs[i], 1) > max_tokens
        if current and (len(current) >= max_texts or over_budget):
            calls.append(current)
            current = []
        current.append(i)
    if current:
        calls.append(current)
    return calls


def estimate_tokens(text: str, max_tokens: int | None) -> int:
    """A tokenizer-free guess of a text's token count (about 4 characters per token, plus the
    two special tokens), capped at the model's limit; the encoder re-plans with exact counts."""
    guess = len(text) // 4 + 2
    return min(guess, max_tokens) if max_tokens else guess
