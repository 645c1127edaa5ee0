"""The pinned encoders reproduce their upstream models (real ONNX files, no fakes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gateway.encoders.catalog import CATALOG
from gateway.encoders.convert import CheckpointError, PlainPooling
from gateway.encoders.convert.weights import read_safetensors
from gateway.encoders.fetch import default_cache_dir
from gateway.encoders.imported import import_checkpoint, imported_specs
from gateway.encoders.onnx import OnnxEncoder, load_encoder
from tests.conftest import DATA
from tests.helpers import L3, L6, L6_INT8, MPNET, SRE, USE

REFERENCE = DATA / "reference-embeddings"
REFERENCE_FILES = {
    L6: "all-MiniLM-L6-v2.jsonl",
    L6_INT8: "all-MiniLM-L6-v2.jsonl",
    MPNET: "all-mpnet-base-v2.jsonl",
    SRE: "sre-embedding-model-1.0.0.jsonl",
}


def encoder(key: str):
    return load_encoder(CATALOG[key], default_cache_dir())


def reference(key: str) -> list[dict]:
    return [json.loads(line) for line in (REFERENCE / REFERENCE_FILES[key]).read_text().splitlines()]


def cosines_to_reference(key: str) -> tuple[np.ndarray, list[dict], tuple[bool, ...]]:
    rows = reference(key)
    result = encoder(key).encode([r["text"] for r in rows])
    expected = np.array([r["embedding"] for r in rows], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    return (result.vectors * expected).sum(axis=1), rows, result.truncated


@pytest.mark.parametrize("key", [L6, MPNET, SRE])
def test_converted_checkpoints_reproduce_upstream_sentence_transformers_on_every_text(key):
    cosines, rows, truncated = cosines_to_reference(key)
    over_long = [i for i, r in enumerate(rows) if len(r["text"].split()) > 500]
    assert len(rows) == 33 and len(over_long) == 1 and truncated[over_long[0]]
    assert float(cosines.min()) >= 0.99999, cosines


def test_the_int8_export_reproduces_upstream_all_minilm_l6_only_approximately():
    cosines, rows, truncated = cosines_to_reference(L6_INT8)
    over_long = [i for i, r in enumerate(rows) if len(r["text"].split()) > 500]
    assert len(over_long) == 1 and truncated[over_long[0]]
    # the int8-weight export reaches >= 0.999 on every text but the 602-token "x x x ..."
    # one, where int8 rounding leaves it at 0.9989 (documented in the README)
    assert all(cosines[i] >= 0.999 for i in range(len(rows)) if i not in over_long), cosines
    assert cosines[over_long[0]] >= 0.998
    assert cosines.mean() >= 0.999


def test_the_fine_tune_and_its_base_model_are_far_apart_at_the_same_dimension():
    texts = [r["text"] for r in reference(SRE)]
    base, tuned = encoder(L6).encode(texts).vectors, encoder(SRE).encode(texts).vectors
    assert base.shape == tuned.shape
    assert float((base * tuned).sum(axis=1).mean()) < 0.8


def test_the_l3_encoder_pools_exactly_as_its_own_graph_does():
    l3 = encoder(L3)
    texts = ["A man is eating food.", "a much longer sentence about waveguides and microwave radiation"]
    batch = l3.tokenizer(texts, padding="longest", return_tensors="np")
    outputs = {
        o.name: v
        for o, v in zip(
            l3.session.get_outputs(),
            l3.session.run(
                None,
                {
                    "input_ids": batch["input_ids"].astype(np.int64),
                    "attention_mask": batch["attention_mask"].astype(np.int64),
                },
            ),
            strict=False,
        )
    }
    graph_pooled = outputs["461"]  # the mean-pooled output the exporter left in the graph
    graph_pooled = graph_pooled / np.linalg.norm(graph_pooled, axis=1, keepdims=True)
    ours = l3.encode(texts).vectors
    np.testing.assert_allclose(ours, graph_pooled, atol=1e-5)


@pytest.mark.parametrize("key", [L3, L6, L6_INT8, MPNET, SRE, USE])
def test_every_model_gives_unit_vectors_of_its_dimension(key):
    result = encoder(key).encode(["hello world", "bonjour le monde", "x"])
    assert result.vectors.shape == (3, CATALOG[key].dim)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("key", [L3, L6, MPNET])
def test_a_text_gets_the_same_vector_alone_or_in_a_padded_batch(key):
    texts = ["short", "a considerably longer text that forces padding on the short one in a batch"]
    together = encoder(key).encode(texts).vectors
    alone = np.vstack([encoder(key).encode([t]).vectors for t in texts])
    assert float((together * alone).sum(axis=1).min()) > 0.99999


def test_use_runs_one_text_at_a_time_so_batch_mates_do_not_move_a_vector():
    texts = ["the cat sat on the mat", "quarterly revenue grew", "x " * 300]
    use = encoder(USE)
    together = use.encode(texts).vectors
    alone = np.vstack([use.encode([t]).vectors for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_over_long_texts_are_truncated_and_reported():
    l3 = encoder(L3)
    result = l3.encode(["short text", "word " * 500])
    assert result.truncated == (False, True)


def test_encoding_nothing_returns_an_empty_matrix():
    assert encoder(L3).encode([]).vectors.shape == (0, 384)


# -- checkpoints saved by today's upstream libraries (tests/data/checkpoints, made by make_checkpoints.py) --

CHECKPOINTS = DATA / "checkpoints"
PLAIN = {"hf-bert": PlainPooling("mean", False)}  # what sentence-transformers itself does with it
SAVED = {
    "st6-bert": ("mean", True),  # sentence-transformers 6.3 format, fp32
    "st6-bert-bf16": ("cls", False),  # the same format, bf16 weights
    "st6-bert-fp16": ("max", True),  # fp16 weights
    "st6-xlm-roberta": ("mean", True),  # XLM-R with a sentencepiece tokenizer
    "st-old-layout": ("mean", True),  # 0_Transformer/ with the prompts at the root
    "hf-bert": ("mean", False),  # a plain Hugging Face checkpoint, imported with --pooling mean
}


@pytest.fixture(scope="module")
def saved_cache(tmp_path_factory) -> Path:
    """A scratch model cache holding every saved checkpoint, imported under its folder name."""
    cache = tmp_path_factory.mktemp("saved-checkpoints")
    for name in SAVED:
        import_checkpoint(CHECKPOINTS / name, name, cache, plain=PLAIN.get(name))
    return cache


def upstream(name: str) -> list[dict]:
    return [json.loads(line) for line in (CHECKPOINTS / f"{name}.jsonl").read_text().splitlines()]


def cosines(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    return (ours * theirs).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)


@pytest.mark.parametrize("name", SAVED)
def test_checkpoints_saved_today_reproduce_upstream_for_documents_and_queries(saved_cache, name):
    spec = imported_specs(saved_cache)[name]
    assert (spec.pooling, spec.normalize, spec.max_tokens) == (*SAVED[name], 32)
    rows = upstream(name)
    texts = [r["text"] for r in rows]
    model = OnnxEncoder(spec, saved_cache)
    documents = model.encode([spec.document_prefix + t for t in texts])
    assert cosines(documents.vectors, np.array([r["embedding"] for r in rows])).min() >= 0.99999
    # the long text is cut to 32 tokens, as upstream cuts it, and reported; "x" is not
    assert documents.truncated[-1] and not documents.truncated[texts.index("x")]
    if "query_embedding" in rows[0]:
        assert (spec.query_prefix, spec.document_prefix) == ("query: ", "passage: ")
        queries = model.encode([spec.query_prefix + t for t in texts]).vectors
        expected = np.array([r["query_embedding"] for r in rows])
        assert cosines(queries, expected).min() >= 0.99999
        # the prompts matter: without them the vectors are off (what dropping them silently did)
        assert cosines(model.encode(texts).vectors, expected).min() < 0.99


def test_bf16_weights_are_widened_to_exactly_the_fp32_values(saved_cache):
    bf16 = read_safetensors(CHECKPOINTS / "st6-bert-bf16" / "model.safetensors")
    raw = (CHECKPOINTS / "st6-bert-bf16" / "model.safetensors").read_bytes()
    assert b'"BF16"' in raw and all(v.dtype == np.float32 for v in bf16.values())
    # a bf16 value is the top half of an fp32: widening loses nothing, so the low 16 bits are zero
    assert all(not (v.view(np.uint32) & 0xFFFF).any() for v in bf16.values())


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}, "does not fit"),
        ({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}, "dtype F8_E4M3"),
        ({"w": {"dtype": "F32", "shape": "four"}}, "malformed header"),
    ],
)
def test_a_damaged_or_unsupported_weights_file_is_refused_by_name(tmp_path, header, message):
    header_bytes = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header_bytes).to_bytes(8, "little") + header_bytes + bytes(16))
    with pytest.raises(CheckpointError, match=message):
        read_safetensors(path)
