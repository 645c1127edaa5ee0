"""BertModel (MiniLM, bge, e5, gte-style BERT checkpoints) as an fp32 ONNX graph.

Mirrors transformers' BertModel in eval mode: word + absolute position + token-type
embeddings, LayerNorm, then post-norm layers with exact GELU. The pooler is not used by
sentence-transformers and is left out.
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
    inputs = ["input_ids", "attention_mask"]
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
    return g.model("driftgate_bert", inputs, x, int(config["hidden_size"]))
