"""ONNX inference for one model spec: tokenize, run the graph, pool, normalise.

This is synchronous work (on the CPU, or on CUDA where `[models] execution_provider` resolves
to it: domain/providers.py); callers run it in a thread (see `batcher.py`) so the event loop
never blocks. Loaded encoders are cached per process by (fingerprint, threads, provider), so
many apps in one process (tests, the demo) share one session per model.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from gateway.domain.batching import plan_calls
from gateway.domain.errors import ConfigError, ModelFileMismatch
from gateway.domain.providers import (
    Provider,
    Setting,
    cuda_missing,
    effective_provider,
    resolve_provider,
    session_providers,
)
from gateway.encoders.base import Encoded
from gateway.encoders.cache import local_path, sha256_file
from gateway.encoders.catalog import ModelSpec
from gateway.encoders.fetch import ensure_files


class OnnxEncoder:
    """Embeds texts with one pinned model. Thread-safe: onnxruntime sessions allow concurrent run()."""

    def __init__(self, spec: ModelSpec, cache_dir: Path, intra_op_threads: int = 0, provider: Setting = "cpu") -> None:
        import onnxruntime as ort  # imported late: gateway/__init__ has disabled telemetry by now

        self.spec = spec
        wanted = resolve_provider(provider, ort.get_available_providers())  # cuda without CUDA: refused first
        for file in spec.files:
            path = local_path(file, cache_dir)
            actual = sha256_file(path)
            if actual != file.sha256:
                again = (
                    "`driftgate models import PATH --key " + spec.key + "`"
                    if file.derived and not spec.sources
                    else "`driftgate models fetch`"
                )
                raise ModelFileMismatch(
                    f"model {spec.key!r}: {path} has sha256 {actual}, expected {file.sha256}; "
                    f"delete it and run {again} again"
                )
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if spec.input_kind == "text":
            import onnxruntime_extensions

            options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
        onnx_path = local_path(spec.file("onnx"), cache_dir)
        self.session = ort.InferenceSession(str(onnx_path), options, providers=session_providers(wanted))
        # what the session really runs on: onnxruntime falls back to the CPU when CUDA cannot start
        # (the GPU build on a machine without a GPU): fine for `auto`, an error where `cuda` was asked
        self.provider: Provider = effective_provider(self.session.get_providers())
        if provider == "cuda" and self.provider != "cuda":
            raise ConfigError([cuda_missing(f"onnxruntime could not start CUDA for model {spec.key!r}")])
        self._input_names = {i.name for i in self.session.get_inputs()}
        self._output = spec.output or self.session.get_outputs()[0].name
        self.tokenizer = None
        if spec.input_kind == "tokens":
            from transformers import AutoTokenizer

            tokenizer_dir = local_path(spec.tokenizer_files()[0], cache_dir).parent
            self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)

    def encode(self, texts: list[str]) -> Encoded:
        """Embed `texts`; order is preserved.

        Texts are tokenized once, then grouped into inference calls by the model's token budget
        (see domain/batching.py): similar lengths together, so a call pads little, many short
        texts per call, long ones a few at a time; batch-dependent models run one text per call.
        """
        if not texts:
            return Encoded(np.zeros((0, self.spec.dim), dtype=np.float32), (), ())
        if self.spec.input_kind == "tokens":
            assert self.tokenizer is not None
            if self.spec.lower_case:
                texts = [t.lower() for t in texts]
            lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
        else:
            lengths = [len(t.split()) for t in texts]  # words: the graph tokenizes by itself
        limit = self.spec.max_tokens
        used = [min(n, limit) if limit is not None else n for n in lengths]
        vectors = np.empty((len(texts), self.spec.dim), dtype=np.float32)
        for call in plan_calls(used, self.spec.max_batch, self.spec.max_batch_tokens):
            vectors[call] = self._encode_call([texts[i] for i in call])
        truncated = tuple(limit is not None and n > limit for n in lengths)
        return Encoded(vectors, truncated, tuple(used))

    def _encode_call(self, texts: list[str]) -> np.ndarray:
        """Vectors of the texts of one inference call (already lower-cased where the model wants it)."""
        if self.spec.input_kind == "text":
            output = self.session.run([self._output], {"inputs": np.array(texts, dtype=object)})[0]
            return self._finish(output, None)
        assert self.tokenizer is not None and self.spec.max_tokens is not None
        batch = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.spec.max_tokens,
            return_tensors="np",
            return_token_type_ids=True,
        )
        feeds = {name: batch[name].astype(np.int64) for name in batch if name in self._input_names}
        output = self.session.run([self._output], feeds)[0]
        return self._finish(output, batch["attention_mask"])

    def _finish(self, output: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        pooled = pool(output, mask, self.spec.pooling)
        if self.spec.normalize:
            pooled = l2_normalize(pooled)
        if pooled.shape[1] != self.spec.dim:
            raise ModelFileMismatch(
                f"model {self.spec.key!r} produced {pooled.shape[1]}-d vectors, its spec says {self.spec.dim}"
            )
        return pooled.astype(np.float32, copy=False)


def pool(output: np.ndarray, mask: np.ndarray | None, pooling: str) -> np.ndarray:
    """Reduce token embeddings (n, seq, dim) to one vector per text."""
    if pooling == "none":
        return output
    if pooling == "cls":
        return output[:, 0, :]
    assert mask is not None, f"{pooling} pooling needs the attention mask"
    if pooling == "max":
        # as sentence-transformers does: padding may never win, so it is set far below any value
        return np.where(mask[..., None].astype(bool), output, np.float32(-1e9)).max(axis=1)
    if pooling == "lasttoken":
        # the last real token of each right-padded row
        last = np.clip(mask.sum(axis=1) - 1, 0, None)
        return output[np.arange(output.shape[0]), last, :]
    weights = mask[..., None].astype(np.float32)
    return (output * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def resolve_execution_provider(setting: Setting) -> Provider:
    """The provider the local models run on here (ConfigError for `cuda` where CUDA is not available)."""
    return resolve_provider(setting, available_providers())


_loaded: dict[tuple[str, str, int, str], OnnxEncoder] = {}
_load_lock = threading.Lock()


def load_encoder(
    spec: ModelSpec,
    cache_dir: Path,
    intra_op_threads: int = 0,
    *,
    progress=None,
    allow_download=True,
    provider: Setting = "cpu",
) -> OnnxEncoder:
    """Return the process-wide encoder for `spec` on `provider` (an `execution_provider` setting),
    fetching its files first when missing."""
    cache_key = (spec.fingerprint, str(cache_dir), intra_op_threads, provider)
    with _load_lock:
        encoder = _loaded.get(cache_key)
        if encoder is None:
            ensure_files([spec], cache_dir, progress=progress, allow_download=allow_download)
            encoder = OnnxEncoder(spec, cache_dir, intra_op_threads, provider)
            _loaded[cache_key] = encoder
        return encoder
