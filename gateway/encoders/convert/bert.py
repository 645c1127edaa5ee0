"""BertModel (MiniLM, bge, e5, gte) and XLMRobertaModel (multilingual-e5, bge-m3) as fp32 ONNX graphs.

Mirrors transformers' BertModel in eval mode: word + absolute position + token-type
embeddings, LayerNorm, then post-norm layers with exact GELU. The pooler is not used by
sentence-transformers and is left out. XLM-RoBERTa is the same encoder with RoBERTa's
positions: they count non-padding tokens from padding_idx + 1 (as MPNet's do), and its single
token type is added as a constant row.
"""

from __future__ import annotations

import onnx

from gateway.encoders.convert.checkpoint import CheckpointError
from gateway.encoders.convert.graph import Graph, Weights


def layer_names(i: int) -> dict[str, str]:
    p = f"encoder.layer.{i}"
    return {
        "q": f"{p}.attention.self.query",
        "k": f"{p}.attention.self.key",
        "v": f"{p}.attention.self.value",
        "o": f"{p}.attention.output.dense",
        "attention_norm": f"{p}.attention.output.LayerNorm",
        "intermediate": f"{p}.intermediate.dense",
        "output": f"{p}.output.dense",
        "output_norm": f"{p}.output.LayerNorm",
    }


def check_config(config: dict) -> None:
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(
            f"BERT position_embedding_type {config['position_embedding_type']!r} is not supported (only 'absolute')"
        )
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"BERT hidden_act {config['hidden_act']!r} is not supported (only 'gelu')")


def build(config: dict, weights: Weights) -> onnx.ModelProto:
    check_config(config)
    g = Graph()
    eps = float(config.get("layer_norm_eps", 1e-12))
    sequence = g.op("Shape", "input_ids", start=1, end=2)
    positions = g.op(
        "Slice",
        g.const("embeddings.position_embeddings.weight", weights["embeddings.position_embeddings.weight"]),
        g.ints(0),
        sequence,
        g.ints(0),
    )
    words = g.op(
        "Gather",
        g.const("embeddings.word_embeddings.weight", weights["embeddings.word_embeddings.weight"]),
        "input_ids",
    )
    x = g.op("Add", words, positions)
    return _encoder(g, config, weights, x, ["input_ids", "attention_mask"], eps, "driftgate_bert")


def build_xlm_roberta(config: dict, weights: Weights) -> onnx.ModelProto:
    check_config(config)
    g = Graph()
    eps = float(config.get("layer_norm_eps", 1e-5))
    x = g.counted_position_embeddings(weights, int(config.get("pad_token_id", 1)))
    types = weights.pop("embeddings.token_type_embeddings.weight", None)
    if types is not None:
        x = g.op("Add", x, g.const("embeddings.token_type_embeddings.row0", types[0]))
    return _encoder(g, config, weights, x, ["input_ids", "attention_mask"], eps, "driftgate_xlm_roberta")


def _encoder(g: Graph, config: dict, weights: Weights, x: str, inputs: list[str], eps: float, name: str):
    """Token types (when the checkpoint has them), the embeddings' LayerNorm, then the layers."""
    if "embeddings.token_type_embeddings.weight" in weights:
        types = g.op(
            "Gather",
            g.const("embeddings.token_type_embeddings.weight", weights["embeddings.token_type_embeddings.weight"]),
            "token_type_ids",
        )
        x = g.op("Add", x, types)
        inputs.append("token_type_ids")
    x = g.layer_norm(x, weights, "embeddings.LayerNorm", eps)
    bias = g.mask_bias("attention_mask")
    for i in range(int(config["num_hidden_layers"])):
        x = g.encoder_layer(x, weights, layer_names(i), int(config["num_attention_heads"]), eps, bias)
    return g.model(name, inputs, x, int(config["hidden_size"]))
