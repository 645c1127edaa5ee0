"""An open-loop load generator: requests start at a fixed arrival rate whether or not earlier
ones have finished, so a slow server shows up as latency, not as a politely lower rate.

Each document id has at most one operation in flight, so the last acknowledged operation on
an id is its expected final state: present at (at least) the acknowledged version, or absent.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field

import aiohttp

RETRYABLE = {502, 503, 504}


@dataclass
class Sample:
    at: float  # seconds since the generator started
    op: str
    status: int  # HTTP status of the final attempt; 0 = connection error
    latency_ms: float
    phase: str
    attempts: int
    model: str | None = None


@dataclass
class Ledger:
    """What the server acknowledged, per document id."""

    last: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> ("write", version) | ("delete", 0)
    uncertain: set[str] = field(default_factory=set)  # ids with an unacknowledged operation


class OpenLoopGenerator:
    def __init__(
        self,
        urls: list[str],
        collection: str,
        corpus: list[tuple[str, str]],
        *,
        rate: float,
        mix: dict[str, float],
        seed: int = 7,
        retries: int = 0,
        timeout_s: float = 30.0,
        fresh_texts: list[str] | None = None,
    ) -> None:
        self.urls = urls
        self.collection = collection
        self.rate = rate
        self.mix = mix
        self.retries = retries
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.random = random.Random(seed)
        self.texts = [text for _, text in corpus]
        self.text_of = dict(corpus)  # an update revises the document's own text
        # inserts take real texts the collection does not hold yet, so no duplicates appear
        self.fresh = list(fresh_texts or self.texts)
        self.live = [doc_id for doc_id, _ in corpus]  # ids believed to exist
        self.busy: set[str] = set()
        self.ledger = Ledger()
        self.samples: list[Sample] = []
        self.phase = "steady"
        self._new_ids = itertools.count()
        self._url = itertools.cycle(urls)
        self.started = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Fire requests at `rate` per second until `stop` is set, then wait for the stragglers."""
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector, timeout=self.timeout) as session:
            tasks: set[asyncio.Task] = set()
            self.started = time.monotonic()
            for n in itertools.count():
                due = self.started + n / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                    except TimeoutError:
                        pass
                if stop.is_set():
                    break
                task = asyncio.create_task(self._one(session))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)

    def _pick_op(self) -> str:
        draw, total = self.random.random(), 0.0
        for op, share in self.mix.items():
            total += share
            if draw < total:
                return op
        return "query"

    def _pick_existing(self) -> str | None:
        for _ in range(20):
            if not self.live:
                return None
            doc_id = self.random.choice(self.live)
            if doc_id not in self.busy:
                return doc_id
        return None

    async def _one(self, session: aiohttp.ClientSession) -> None:
        op = self._pick_op()
        base = f"/v1/collections/{self.collection}"
        text = self.random.choice(self.texts)
        doc_id = None
        body: dict | None
        if op == "insert":
            doc_id = f"lt-{next(self._new_ids)}"
            text = self.fresh.pop() if len(self.fresh) > 1 else self.random.choice(self.texts)
            self.text_of[doc_id] = text
            method, path, body = "PUT", f"{base}/documents/{doc_id}", {"text": text, "metadata": {"src": "load"}}
        elif op in ("update", "delete"):
            doc_id = self._pick_existing()
            if doc_id is None:
                op = "query"
            elif op == "update":
                revised = self.text_of.get(doc_id, text) + " (revised)"
                method, path, body = "PUT", f"{base}/documents/{doc_id}", {"text": revised}
            else:
                method, path, body = "DELETE", f"{base}/documents/{doc_id}", None
        if op == "query":
            words = text.split()
            start = self.random.randrange(max(1, len(words) - 8))
            method, path, body = "POST", f"{base}/query", {"text": " ".join(words[start : start + 8]), "k": 10}
        if doc_id is not None:
            self.busy.add(doc_id)
        try:
            await self._send(session, op, method, path, body, doc_id)
        finally:
            if doc_id is not None:
                self.busy.discard(doc_id)

    async def _send(self, session, op: str, method: str, path: str, body: dict | None, doc_id: str | None) -> None:
        phase = self.phase
        started = time.monotonic()
        status, payload, model, attempts = 0, None, None, 0
        while True:
            attempts += 1
            try:
                async with session.request(method, next(self._url) + path, json=body) as response:
                    status = response.status
                    payload = await response.json(content_type=None)
                    model = response.headers.get("X-Driftgate-Model")
            except (TimeoutError, aiohttp.ClientError):
                status = 0
            if status not in RETRYABLE and status != 0 or attempts > self.retries:
                break
            await asyncio.sleep(min(0.25 * 2**attempts, 4.0))  # 0.5, 1, 2, 4, 4 ... s
        self.samples.append(
            Sample(started - self.started, op, status, (time.monotonic() - started) * 1000, phase, attempts, model)
        )
        if doc_id is None:
            return
        if op in ("insert", "update") and status == 200:
            assert payload is not None
            self.ledger.last[doc_id] = ("write", payload["version"])
            self.ledger.uncertain.discard(doc_id)
            if op == "insert":
                self.live.append(doc_id)
        elif op == "delete" and status in (200, 404):
            self.ledger.last[doc_id] = ("delete", 0)
            self.ledger.uncertain.discard(doc_id)
            if doc_id in self.live:
                self.live.remove(doc_id)
        else:
            self.ledger.uncertain.add(doc_id)
