"""The remote models of one app: providers (pooled session + breaker), encoders, drift refusals.

`EmbeddingService` hands every remote model's work here; nothing above it can tell a remote
model from a local one except by the errors it may answer (503 encoder_unavailable with
Retry-After during an outage, 502 encoder_bad_reply for a malformed reply, 409 model_drift
while the drift watch has found the model's vectors moved).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.domain.errors import ModelDrift
from gateway.encoders.onnx import Encoded
from gateway.encoders.remote import Provider, RemoteEncoder, RemoteModelSpec


class RemoteModels:
    def __init__(self, on_tokens: Callable[[str, int], None] | None = None) -> None:
        self._on_tokens = on_tokens or (lambda _key, _n: None)
        self._providers: dict[str, Provider] = {}
        self._encoders: dict[str, RemoteEncoder] = {}
        # model key -> why its vectors must not be stored now (set by the drift watch)
        self.drifted: dict[str, str] = {}

    def encoder(self, spec: RemoteModelSpec) -> RemoteEncoder:
        encoder = self._encoders.get(spec.key)
        if encoder is None:
            assert spec.endpoint is not None
            base = spec.endpoint.base_url.rstrip("/")
            provider = self._providers.setdefault(base, Provider(base))
            key = spec.key

            def count_tokens(n: int) -> None:
                self._on_tokens(key, n)

            encoder = RemoteEncoder(spec, provider, on_tokens=count_tokens)
            self._encoders[spec.key] = encoder
        return encoder

    def refuse_if_drifted(self, key: str) -> None:
        if key in self.drifted:
            raise ModelDrift(
                f"model {key!r} has drifted ({self.drifted[key]}); no vectors of it are stored until its "
                "probes match again. Roll reads back or migrate to another model; see docs/remote-models.md"
            )

    async def embed(
        self, spec: RemoteModelSpec, texts: list[str], kind: str, *, bulk: bool = False, probe: bool = False
    ) -> Encoded:
        """Vectors from the provider. Document vectors (the ones that get stored) are refused while
        the model is drifted, checked again after the reply in case drift was found meanwhile."""
        storing = kind == "document" and not probe
        if storing:
            self.refuse_if_drifted(spec.key)
        encoded = await self.encoder(spec).encode(texts, kind, bulk=bulk)
        if storing:
            self.refuse_if_drifted(spec.key)
        return encoded

    def tokens_used(self) -> dict[str, int]:
        """Tokens this process spent per remote model (from `usage`, else estimated)."""
        return {key: encoder.tokens_used for key, encoder in self._encoders.items()}

    def breaker_state(self, spec: RemoteModelSpec) -> dict:
        """The provider's circuit: state, how long it has been open, the last error."""
        return self.encoder(spec).provider.breaker.describe(time.monotonic())

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()
        self._providers.clear()
        self._encoders.clear()
