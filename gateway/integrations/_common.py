"""What the framework adapters share: where the gateway is (one sync client, one async client per
event loop), making sure the collection exists, and new ids. No framework import here."""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.client import AsyncClient, Client
from gateway.client.errors import CollectionNotFound

DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass
class Gateway:
    """The gateway an adapter talks to. `client`/`async_client` may be given ready-made; otherwise
    they are made from `url`, `api_key` and `timeout`. An httpx pool belongs to one event loop, so
    an async client is made per loop that calls (frameworks' sync wrappers start their own)."""

    url: str = DEFAULT_URL
    api_key: str | None = None
    timeout: float = 30.0
    client: Client | None = None
    async_client: AsyncClient | None = None
    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = field(
        default_factory=weakref.WeakKeyDictionary, repr=False
    )

    @property
    def sync(self) -> Client:
        if self.client is None:
            self.client = Client(self.url, api_key=self.api_key, timeout=self.timeout)
        return self.client

    @property
    def aio(self) -> AsyncClient:
        if self.async_client is not None:
            return self.async_client
        loop = asyncio.get_running_loop()  # a weak key: a finished loop's client goes with it
        if loop not in self._per_loop:
            self._per_loop[loop] = AsyncClient(self.url, api_key=self.api_key, timeout=self.timeout)
        return self._per_loop[loop]

    def ensure_collection(self, collection: str, model: str | None) -> None:
        """Create `collection` on `model` unless it exists (with whatever model it reads now: after
        a migration the app's configured first model is history, not an error)."""
        try:
            self.sync.get_collection(collection)
        except CollectionNotFound:
            if model is None:
                raise CollectionNotFound(
                    404,
                    "collection_not_found",
                    f"collection {collection!r} does not exist; pass model=<model key> to create it",
                ) from None
            self.sync.create_collection(collection, model)


def new_ids(ids: Sequence[str | None] | None, n: int) -> list[str]:
    """The caller's ids, with a fresh uuid4 for each one missing."""
    if ids is not None and len(ids) != n:
        raise ValueError(f"got {len(ids)} ids for {n} documents; pass one id per document (or none)")
    given = list(ids) if ids is not None else [None] * n
    return [i if i else str(uuid.uuid4()) for i in given]
