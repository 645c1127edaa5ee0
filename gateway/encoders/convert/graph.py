"""A tiny, deterministic ONNX graph builder shared by the BERT, XLM-RoBERTa and MPNet converters.

Node and tensor names come from a counter and from checkpoint weight names, the producer
and opset are fixed and nothing records a time or a path, so the same weights always
serialise to the same bytes (and therefore the same fingerprint).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization is in the default domain from 17 on
IR_VERSION = 8  # pinned, so a newer `onnx` package does not change the bytes
PRODUCER = "driftgate-convert"
CONVERTER_VERSION = "1"  # bump when the graph layout changes: it changes every converted hash

Weights = dict[str, np.ndarray]


class Graph:
    """Accumulates nodes and initializers in insertion order."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        """Add an initializer once under `name` and return the name."""
        if name not in self._names:
            self._names.add(name)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def ints(self, *values: int) -> str:
        return self.const(
            "const_i64_" + "_".join(str(v).replace("-", "m") for v in values), np.array(values, dtype=np.int64)
        )

    def scalar(self, value: float) -> str:
        return self.const(f"const_f32_{value!r}".replace("-", "m").replace(".", "p"), np.array(value, dtype=np.float32))

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        """Append one node with a single output; returns the output's name."""
        self._count += 1
        output = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=f"n{self._count}", **attrs))
        return output

    # -- building blocks ------------------------------------------------------------------

    def linear(self, x: str, weights: Weights, prefix: str) -> str:
        """x @ W.T + b with a torch Linear's weights (stored [out, in], transposed once here)."""
        w = self.const(f"{prefix}.weight_t", weights[f"{prefix}.weight"].T)
        b = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("Add", self.op("MatMul", x, w), b)

    def layer_norm(self, x: str, weights: Weights, prefix: str, eps: float) -> str:
        gamma = self.const(f"{prefix}.weight", weights[f"{prefix}.weight"])
        beta = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=float(eps))

    def gelu(self, x: str) -> str:
        """The exact (erf) GELU that BERT's and MPNet's "gelu" activation is."""
        inner = self.op("Erf", self.op("Div", x, self.scalar(math.sqrt(2.0))))
        return self.op("Mul", self.op("Mul", x, self.scalar(0.5)), self.op("Add", inner, self.scalar(1.0)))

    def mask_bias(self, attention_mask: str) -> str:
        """[B, S] 0/1 mask -> [B, 1, 1, S] additive bias: 0 for tokens, float32 min for padding."""
        mask = self.op("Cast", attention_mask, to=TensorProto.FLOAT)
        inverted = self.op("Sub", self.scalar(1.0), mask)
        bias = self.op("Mul", inverted, self.scalar(float(np.finfo(np.float32).min)))
        return self.op("Unsqueeze", bias, self.ints(1, 2))

    def self_attention(
        self, x: str, weights: Weights, names: dict[str, str], heads: int, bias: str, position_bias: str | None = None
    ) -> str:
        """Multi-head self-attention; `names` maps q/k/v/o to the checkpoint's Linear prefixes."""
        hidden = weights[names["q"] + ".weight"].shape[0]
        head_dim = hidden // heads
        split = self.ints(0, 0, heads, head_dim)
        q = self.op("Transpose", self.op("Reshape", self.linear(x, weights, names["q"]), split), perm=[0, 2, 1, 3])
        k = self.op("Transpose", self.op("Reshape", self.linear(x, weights, names["k"]), split), perm=[0, 2, 3, 1])
        v = self.op("Transpose", self.op("Reshape", self.linear(x, weights, names["v"]), split), perm=[0, 2, 1, 3])
        scores = self.op("Div", self.op("MatMul", q, k), self.scalar(math.sqrt(head_dim)))
        if position_bias is not None:
            scores = self.op("Add", scores, position_bias)
        probs = self.op("Softmax", self.op("Add", scores, bias), axis=-1)
        context = self.op("Transpose", self.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        merged = self.op("Reshape", context, self.ints(0, 0, hidden))
        return self.linear(merged, weights, names["o"])

    def encoder_layer(
        self,
        x: str,
        weights: Weights,
        names: dict[str, str],
        heads: int,
        eps: float,
        bias: str,
        position_bias: str | None = None,
    ) -> str:
        """Post-norm transformer layer: attention, add & norm, GELU feed-forward, add & norm."""
        attended = self.self_attention(x, weights, names, heads, bias, position_bias)
        x = self.layer_norm(self.op("Add", attended, x), weights, names["attention_norm"], eps)
        inner = self.gelu(self.linear(x, weights, names["intermediate"]))
        return self.layer_norm(
            self.op("Add", self.linear(inner, weights, names["output"]), x), weights, names["output_norm"], eps
        )

    def counted_position_embeddings(self, weights: Weights, padding_idx: int) -> str:
        """Word + position embeddings, positions counting non-padding tokens from padding_idx + 1.

        This is how RoBERTa-family models (XLM-R) and MPNet number their positions; padding keeps padding_idx.
        """
        tokens = self.op(
            "Cast", self.op("Not", self.op("Equal", "input_ids", self.ints(padding_idx))), to=TensorProto.INT64
        )
        position_ids = self.op(
            "Add", self.op("Mul", self.op("CumSum", tokens, self.ints(1)), tokens), self.ints(padding_idx)
        )
        words = self.op(
            "Gather",
            self.const("embeddings.word_embeddings.weight", weights["embeddings.word_embeddings.weight"]),
            "input_ids",
        )
        positions = self.op(
            "Gather",
            self.const("embeddings.position_embeddings.weight", weights["embeddings.position_embeddings.weight"]),
            position_ids,
        )
        return self.op("Add", words, positions)

    # -- the model ------------------------------------------------------------------------

    def model(self, name: str, inputs: list[str], output: str, hidden: int) -> onnx.ModelProto:
        """The finished model: int64 [batch, sequence] inputs, one float [batch, sequence, hidden] output."""
        self.nodes.append(helper.make_node("Identity", [output], ["last_hidden_state"], name="output"))
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info(i, TensorProto.INT64, ["batch", "sequence"]) for i in inputs],
            [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden])],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph,
            producer_name=PRODUCER,
            producer_version=CONVERTER_VERSION,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
        )
        onnx.checker.check_model(model)
        return model
