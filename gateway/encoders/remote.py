"""Remote embedding models: an OpenAI-compatible `/embeddings` provider as a pinned model.

`RemoteEncoder` implements the `Encoder` contract of encoders/base.py (texts of a kind on a
lane -> float32 vectors; dim, max batch, fingerprint and probe tolerance from its spec). Texts
are cut into requests of at most `max_batch`, up to `max_concurrency` requests are in flight
(interactive ones first), within the requests/minute and tokens/minute limits. Each provider (base URL) has one pooled
aiohttp session and one circuit breaker. Transient failures (429, 5xx, connection errors,
timeouts) are retried with tenacity, honouring Retry-After and the request's deadline; an
outage answers `EncoderUnavailable` (503 + Retry-After) quickly. Every reply is validated
before a vector leaves this module.

A provider is a third party, so what it sends is bounded and never relayed: a reply larger
than its request can need (`max_reply_bytes`) is cut off while it streams in; redirects are
not followed (a 307 would re-post the texts, and the API key, to another origin); an error
reply's body goes to the log, with the API key masked, never into the caller's answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from gateway.domain.breaker import CircuitBreaker
from gateway.domain.deadline import request_deadline
from gateway.domain.embedding_reply import BadReply, estimate_tokens, parse_embeddings, split_tokens
from gateway.domain.errors import EncoderBadReply, EncoderUnavailable
from gateway.domain.fingerprint import fingerprint
from gateway.domain.pacing import Pacer
from gateway.encoders.base import Encoded, Kind, Lane, prefixed
from gateway.encoders.catalog import ModelSpec
from gateway.logs import escape_control

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
# the most a reply may weigh: a float in JSON is ~20 bytes; 64 leaves room for pretty-printing
REPLY_BYTES_PER_FLOAT = 64
REPLY_BYTES_SLACK = 64 * 1024


@dataclass(frozen=True, eq=False)
class RemoteEndpoint:
    """How to reach a provider's model; everything that shapes the vectors is in the fingerprint."""

    base_url: str
    model: str
    api_key_env: str | None = None
    query_params: dict[str, Any] = field(default_factory=dict)
    document_params: dict[str, Any] = field(default_factory=dict)
    dimensions: int | None = None
    max_concurrency: int = 4
    timeout_s: float = 30.0
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    drift_check_interval_s: float = 600.0
    price_per_million_tokens: float | None = None

    def params(self, kind: str) -> dict[str, Any]:
        return self.query_params if kind == "query" else self.document_params


@dataclass(frozen=True)
class RemoteModelSpec(ModelSpec):
    """A model served by an OpenAI-compatible provider; no files, its identity is its declaration."""

    endpoint: RemoteEndpoint | None = field(default=None, hash=False)

    @property
    def drift_check_interval_s(self) -> float | None:
        """Its files cannot be hashed: the drift watch re-checks its probes this often."""
        assert self.endpoint is not None
        return self.endpoint.drift_check_interval_s

    @property
    def fingerprint(self) -> str:
        """base_url, model, dim, prefixes and every request parameter: change one and it is another model."""
        endpoint = self.endpoint
        assert endpoint is not None
        return fingerprint(
            {},
            {
                "backend": "remote-openai",
                "base_url": endpoint.base_url.rstrip("/"),
                "model": endpoint.model,
                "dim": self.dim,
                "dimensions": endpoint.dimensions,
                "query_params": json.dumps(endpoint.query_params, sort_keys=True),
                "document_params": json.dumps(endpoint.document_params, sort_keys=True),
                "query_prefix": self.query_prefix,
                "document_prefix": self.document_prefix,
            },
        )


def max_reply_bytes(texts: int, dim: int) -> int:
    """The largest reply accepted for `texts` vectors of `dim` floats (usage and ids included)."""
    return texts * (dim * REPLY_BYTES_PER_FLOAT + 1024) + REPLY_BYTES_SLACK


class _ReplyTooLarge(Exception):
    pass


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or _ReplyTooLarge as soon as it (or its announced length) passes `limit`."""
    if response.content_length is not None and response.content_length > limit:
        raise _ReplyTooLarge
    parts, total = [], 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise _ReplyTooLarge
        parts.append(chunk)
    return b"".join(parts)


class _Retryable(Exception):
    """A transient provider failure; `retry_after` is what the provider asked for, if anything."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Slots:
    """A semaphore that serves interactive waiters before bulk ones (FIFO within each)."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: dict[bool, deque[asyncio.Future]] = {False: deque(), True: deque()}

    async def acquire(self, bulk: bool) -> None:
        if self._free > 0 and not self._waiters[False] and not self._waiters[True]:
            self._free -= 1
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters[bulk].append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted as we were cancelled: pass it on
            else:
                self._waiters[bulk].remove(future)
            raise

    def release(self) -> None:
        for bulk in (False, True):
            queue = self._waiters[bulk]
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)
                    return
        self._free += 1


class Provider:
    """One base URL: a pooled session (created in the running loop) and a circuit breaker."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.breaker = CircuitBreaker(failure_threshold=3, cooldown_s=1.0, max_cooldown_s=30.0, trial_timeout_s=60.0)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class RemoteEncoder:
    """Embeds through one provider model. Async and safe to share within one event loop."""

    runs_on = "remote"  # where it runs, as `driftgate models list` and status say (base.Encoder)

    def __init__(
        self,
        spec: RemoteModelSpec,
        provider: Provider,
        *,
        on_tokens: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert spec.endpoint is not None
        self.spec = spec
        self.endpoint = spec.endpoint
        self.provider = provider
        self._on_tokens = on_tokens or (lambda _n: None)
        self._clock = clock
        self._slots = _Slots(self.endpoint.max_concurrency)
        self._requests = Pacer(self.endpoint.requests_per_minute)
        self._tokens = Pacer(self.endpoint.tokens_per_minute)
        self._url = provider.base_url + "/embeddings"
        self.tokens_used = 0
        self.requests_sent = 0

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        env = self.endpoint.api_key_env
        if env:
            key = os.environ.get(env)
            if not key:
                raise EncoderUnavailable(
                    f"model {self.spec.key!r}: the API key variable {env} is not set; export it and restart",
                    retry_after=30,
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def encode(self, texts: list[str], kind: Kind, lane: Lane = Lane.INTERACTIVE) -> Encoded:
        """Vectors of `texts` in order, prefixed for `kind`; requests of max_batch run concurrently.

        Interactive requests take the provider's free slots before shadow and bulk ones."""
        if not texts:
            return Encoded(np.zeros((0, self.spec.dim), dtype=np.float32), (), ())
        texts = prefixed(self.spec, texts, kind)
        bulk = lane is not Lane.INTERACTIVE
        step = self.spec.max_batch
        chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
        tasks = [asyncio.ensure_future(self._request(chunk, kind, bulk)) for chunk in chunks]
        try:
            # every request runs to its end even when a sibling fails: cancelling a half-open trial
            # would leave the breaker without its verdict (and the provider's reply unused)
            results = await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        parts: list[tuple[np.ndarray, tuple[int, ...]]] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            parts.append(result)
        vectors = np.vstack([p[0] for p in parts])
        tokens = tuple(t for p in parts for t in p[1])
        return Encoded(vectors, (False,) * len(texts), tokens)

    async def close(self) -> None:
        """Nothing of its own to close: the provider's session is shared (see services/remote_models.py)."""

    # -- one request, retried --------------------------------------------------------------

    def _deadline(self) -> float:
        """Loop time by which we give up: the caller's request deadline, or our own budget."""
        loop_now = asyncio.get_running_loop().time()
        own = loop_now + self.endpoint.timeout_s * 2
        caller = request_deadline.get()
        return min(own, caller - 0.25) if caller is not None else own

    async def _request(self, texts: list[str], kind: str, bulk: bool) -> tuple[np.ndarray, tuple[int, ...]]:
        deadline = self._deadline()
        loop = asyncio.get_running_loop()

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            asked = getattr(exc, "retry_after", None)
            if asked is not None:
                return asked
            return min(2.0, 0.1 * 2 ** (state.attempt_number - 1))

        def stop(state: RetryCallState) -> bool:
            upcoming = state.upcoming_sleep or 0.0
            return state.attempt_number >= MAX_ATTEMPTS or loop.time() + upcoming >= deadline

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Retryable), wait=wait, stop=stop, reraise=True
            ):
                with attempt:
                    return await self._attempt(texts, kind, bulk, deadline)
        except _Retryable as exc:
            retry_after = exc.retry_after if exc.retry_after is not None else 1.0
            raise EncoderUnavailable(
                f"embedding provider {self.provider.base_url} for model {self.spec.key!r} failed: {exc.reason}; "
                f"retry after {math.ceil(retry_after)} s",
                retry_after=retry_after,
            ) from None
        raise AssertionError("unreachable")

    async def _attempt(
        self, texts: list[str], kind: str, bulk: bool, deadline: float
    ) -> tuple[np.ndarray, tuple[int, ...]]:
        loop = asyncio.get_running_loop()
        breaker = self.provider.breaker
        allowed, wait = breaker.allow(self._clock())
        if not allowed:
            raise EncoderUnavailable(
                f"embedding provider {self.provider.base_url} is failing (circuit open); "
                f"model {self.spec.key!r} retries in {wait:.1f} s",
                retry_after=wait,
            )
        try:
            await self._slots.acquire(bulk)
        except BaseException:
            breaker.release_trial()  # cancelled while queued: the trial (if this was it) never went out
            raise
        try:
            await self._pace(texts, deadline)
            return await self._post(texts, kind, deadline - loop.time())
        except BaseException:
            if breaker.state.value == "half_open":
                breaker.release_trial()
            raise
        finally:
            self._slots.release()

    async def _pace(self, texts: list[str], deadline: float) -> None:
        estimated = sum(estimate_tokens(t) for t in texts)
        now = asyncio.get_running_loop().time()
        delay = max(self._requests.reserve(now, 1), self._tokens.reserve(now, estimated))
        if delay <= 0:
            return
        if now + delay >= deadline:
            self._requests.refund(1)
            self._tokens.refund(estimated)
            raise EncoderUnavailable(
                f"model {self.spec.key!r} is at its configured rate limit; retry in {delay:.1f} s",
                retry_after=delay,
                code="rate_limited",
            )
        await asyncio.sleep(delay)

    async def _post(self, texts: list[str], kind: str, budget_s: float) -> tuple[np.ndarray, tuple[int, ...]]:
        endpoint, breaker = self.endpoint, self.provider.breaker
        body: dict[str, Any] = {
            "model": endpoint.model,
            "input": texts,
            "encoding_format": "float",
            **endpoint.params(kind),
        }
        if endpoint.dimensions is not None:
            body["dimensions"] = endpoint.dimensions
        timeout = aiohttp.ClientTimeout(total=max(0.05, min(endpoint.timeout_s, budget_s)))
        limit = max_reply_bytes(len(texts), self.spec.dim)
        self.requests_sent += 1
        try:
            async with self.provider.session().post(
                self._url, json=body, headers=self._headers(), timeout=timeout, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                location = response.headers.get("Location", "")
                raw = await _read_bounded(response, limit)
        except _ReplyTooLarge:
            breaker.record_success()  # it answered: a misbehaving provider, not an outage
            log.error("model %s: reply from %s is over %d bytes; refused", self.spec.key, self._url, limit)
            raise EncoderBadReply(
                f"model {self.spec.key!r}: the provider at {self.provider.base_url} sent a reply larger than "
                f"{limit} bytes for {len(texts)} texts; nothing was stored. Check its model and dimensions settings"
            ) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("model %s: request to %s failed: %r", self.spec.key, self._url, exc)
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"connection failed ({exc or 'closed'})"
            breaker.record_failure(self._clock(), reason=reason)
            raise _Retryable(reason) from None
        if status == 429:
            breaker.release_trial()
            raise _Retryable("rate limited by the provider (429)", retry_after)
        if status >= 500 or status == 408:
            breaker.record_failure(self._clock(), retry_after, reason=f"HTTP {status}")
            raise _Retryable(f"HTTP {status}", retry_after)
        breaker.record_success()  # it answered: whatever else is wrong, it is not an outage
        if 300 <= status < 400:
            log.error(
                "model %s: %s redirected (HTTP %d) to %r; not followed", self.spec.key, self._url, status, location
            )
            raise EncoderBadReply(
                f"model {self.spec.key!r}: the provider at {self.provider.base_url} answered with a redirect "
                f"(HTTP {status}); redirects are not followed, so texts and the API key go only to base_url. "
                "Set base_url to the address it redirects to (the gateway log names it)",
                code="encoder_rejected",
            )
        if status != 200:
            raise EncoderBadReply(self._rejection(status, raw), code="encoder_rejected")
        try:
            payload = json.loads(raw)
            vectors, usage = parse_embeddings(payload, len(texts), self.spec.dim)
        except (ValueError, BadReply) as exc:
            reason = str(exc) if isinstance(exc, BadReply) else "reply is not JSON"
            log.error("model %s: malformed reply from %s: %s", self.spec.key, self._url, reason)
            raise EncoderBadReply(
                f"model {self.spec.key!r}: the provider at {self.provider.base_url} sent a malformed reply "
                f"({reason}); nothing was stored. Check its model and dimensions settings"
            ) from None
        tokens = split_tokens(usage, texts)
        total = sum(tokens)
        self.tokens_used += total
        self._on_tokens(total)
        return vectors, tokens

    def _rejection(self, status: int, raw: bytes) -> str:
        """What the caller is told of a refusal: the status and what to check. The provider's own
        words go to the log only (masked): they may echo the API key or the texts."""
        log.error(
            "model %s: %s refused the request (HTTP %d): %s",
            self.spec.key,
            self._url,
            status,
            escape_control(self._masked(raw[:500].decode(errors="replace"))),
        )
        hint = {
            401: "check the API key (api_key_env)",
            403: "check the API key's permissions",
            404: "check base_url and the model name",
        }.get(status, "check the input and the model's settings")
        return (
            f"model {self.spec.key!r}: the provider refused the request (HTTP {status}); {hint}. "
            "The provider's reply is in the gateway log"
        )

    def _masked(self, text: str) -> str:
        key = os.environ.get(self.endpoint.api_key_env or "", "")
        return text.replace(key, "[api key]") if key else text


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; HTTP dates are rare for APIs)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
