"""MPNetModel (all-mpnet-base-v2 and its fine-tunes) as an fp32 ONNX graph.

Differences from BERT, as transformers' MPNetModel computes them in eval mode: position
ids count non-padding tokens from padding_idx + 1; there are no token types; and every
layer adds one shared relative position bias, bucketed T5-style over key - query offsets.
The bucket of every offset up to the position table's length is computed here in numpy
and stored as a constant, so the graph only gathers.
"""

from __future__ import annotations

import numpy as np
import onnx

from gateway.encoders.convert.checkpoint import CheckpointError
from gateway.encoders.convert.graph import Graph, Weights

PADDING_IDX = 1  # MPNet's embeddings hard-code it
MAX_DISTANCE = 128  # transformers' default, which MPNetEncoder uses


def layer_names(i: int) -> dict[str, str]:
    p = f"encoder.layer.{i}"
    return {
        "q": f"{p}.attention.attn.q",
        "k": f"{p}.attention.attn.k",
        "v": f"{p}.attention.attn.v",
        "o": f"{p}.attention.attn.o",
        "attention_norm": f"{p}.attention.LayerNorm",
        "intermediate": f"{p}.intermediate.dense",
        "output": f"{p}.output.dense",
        "output_norm": f"{p}.output.LayerNorm",
    }


def relative_buckets(relative_position: np.ndarray, num_buckets: int, max_distance: int = MAX_DISTANCE) -> np.ndarray:
    """Bucket of each key - query offset: exact for small offsets, log-spaced beyond, split by sign."""
    n = -relative_position.astype(np.int64)
    half = num_buckets // 2
    result = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    # float32 as in the reference implementation, so borderline offsets land in the same bucket
    scaled = (
        np.log(np.maximum(n, 1).astype(np.float32) / np.float32(max_exact))
        / np.float32(np.log(max_distance / max_exact))
        * np.float32(half - max_exact)
    )
    large = np.minimum(max_exact + scaled.astype(np.int64), half - 1)
    return result + np.where(n < max_exact, n, large)


def build(config: dict, weights: Weights) -> onnx.ModelProto:
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"MPNet hidden_act {config['hidden_act']!r} is not supported (only 'gelu')")
    g = Graph()
    eps = float(config.get("layer_norm_eps", 1e-5))
    length = weights["embeddings.position_embeddings.weight"].shape[0]
    num_buckets = int(config.get("relative_attention_num_buckets", 32))

    x = g.layer_norm(g.counted_position_embeddings(weights, PADDING_IDX), weights, "embeddings.LayerNorm", eps)

    # relative position bias [1, heads, S, S], shared by every layer
    sequence = g.op("Squeeze", g.op("Shape", "input_ids", start=1, end=2), g.ints(0))
    steps = g.op(
        "Range",
        g.const("const_i64_scalar_0", np.array(0, dtype=np.int64)),
        sequence,
        g.const("const_i64_scalar_1", np.array(1, dtype=np.int64)),
    )
    offsets = g.op("Sub", g.op("Unsqueeze", steps, g.ints(0)), g.op("Unsqueeze", steps, g.ints(1)))
    table = g.const("relative_bucket_table", relative_buckets(np.arange(-(length - 1), length), num_buckets))
    buckets = g.op("Gather", table, g.op("Add", offsets, g.ints(length - 1)))
    per_head = g.op(
        "Gather",
        g.const("encoder.relative_attention_bias.weight", weights["encoder.relative_attention_bias.weight"]),
        buckets,
    )
    position_bias = g.op("Unsqueeze", g.op("Transpose", per_head, perm=[2, 0, 1]), g.ints(0))

    bias = g.mask_bias("attention_mask")
    for i in range(int(config["num_hidden_layers"])):
        x = g.encoder_layer(x, weights, layer_names(i), int(config["num_attention_heads"]), eps, bias, position_bias)
    return g.model("driftgate_mpnet", ["input_ids", "attention_mask"], x, int(config["hidden_size"]))
