"""The remote models of one app: a provider (pooled session + breaker) per base URL, their encoders.

The model registry (services/embedding.py) asks here for a remote model's `Encoder`; nothing
above the registry can tell a remote model from a local one except by the errors it may answer
(503 encoder_unavailable with Retry-After during an outage, 502 encoder_bad_reply for a
malformed reply). Drift verdicts live in the registry, one for every model.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.encoders.remote import Provider, RemoteEncoder, RemoteModelSpec


class RemoteModels:
    def __init__(self, on_tokens: Callable[[str, int], None] | None = None) -> None:
        self._on_tokens = on_tokens or (lambda _key, _n: None)
        self._providers: dict[str, Provider] = {}
        self._encoders: dict[str, RemoteEncoder] = {}

    def encoder(self, spec: RemoteModelSpec) -> RemoteEncoder:
        """The model's encoder, on its provider's shared session (nothing is sent yet)."""
        encoder = self._encoders.get(spec.key)
        if encoder is None or encoder.spec != spec:
            assert spec.endpoint is not None
            base = spec.endpoint.base_url.rstrip("/")
            provider = self._providers.setdefault(base, Provider(base))
            key = spec.key

            def count_tokens(n: int) -> None:
                self._on_tokens(key, n)

            encoder = RemoteEncoder(spec, provider, on_tokens=count_tokens)
            self._encoders[spec.key] = encoder
        return encoder

    def tokens_used(self) -> dict[str, int]:
        """Tokens this process spent per remote model (from `usage`, else estimated)."""
        return {key: encoder.tokens_used for key, encoder in self._encoders.items()}

    def usage(self, key: str) -> dict | None:
        """Tokens and circuit state of a remote model this app has used; None for any other key."""
        encoder = self._encoders.get(key)
        if encoder is None:
            return None
        circuit = encoder.provider.breaker.describe(time.monotonic())  # state, how long open, last error
        return {"tokens_used": encoder.tokens_used, "circuit": circuit}

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()
        self._providers.clear()
        self._encoders.clear()
