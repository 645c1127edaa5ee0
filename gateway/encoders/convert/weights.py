"""Read a model.safetensors file into fp32 numpy arrays, bf16 and fp16 included, checking every offset.

numpy has no bfloat16, so safetensors' numpy API cannot read today's bf16 checkpoints. The
format is simple (an 8-byte header length, a JSON header of dtype, shape and byte offsets per
tensor, then the data), so it is read here: a bf16 value is the upper half of an fp32 one, and
widening it is exact. Every floating tensor comes out as fp32; nothing outside the file's data
section is ever read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from gateway.encoders.convert.errors import CheckpointError

FLOATS: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "F64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),
}
INTEGERS: dict[str, np.dtype] = {
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
}
MAX_HEADER_BYTES = 100 << 20


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of `path`: floating ones as fp32, integer ones as they are."""
    data = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
    if data.size < 8:
        raise CheckpointError(f"{path} is not a safetensors file (shorter than its header)")
    length = int(data[:8].view("<u8")[0])
    if length > min(MAX_HEADER_BYTES, data.size - 8):
        raise CheckpointError(f"{path} is not a safetensors file (header length {length} is past its end)")
    try:
        header = json.loads(bytes(data[8 : 8 + length]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a safetensors file (its header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (its header is not an object)")
    body = data[8 + length :]
    tensors = {}
    for name, info in header.items():
        if name != "__metadata__":
            tensors[name] = _tensor(path, name, info, body)
    return tensors


def _tensor(path: Path, name: str, info: object, body: np.ndarray) -> np.ndarray:
    try:
        dtype_name, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]  # type: ignore[index]
        shape = [int(d) for d in shape]
        begin, end = int(begin), int(end)
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry {info!r}") from None
    dtype = FLOATS.get(dtype_name) or INTEGERS.get(dtype_name)
    if dtype is None:
        raise CheckpointError(
            f"{path}: tensor {name!r} has dtype {dtype_name}; supported: {', '.join([*FLOATS, *INTEGERS])}"
        )
    expected = math.prod(shape) * dtype.itemsize
    if min(shape, default=0) < 0 or not 0 <= begin <= end <= body.size or end - begin != expected:
        raise CheckpointError(
            f"{path}: tensor {name!r} ({dtype_name} {shape}) has byte range {begin}-{end} that does not fit "
            f"its shape or the file; the file is damaged: save the model again"
        )
    raw = np.asarray(body[begin:end]).view(dtype).reshape(shape)
    if dtype_name == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype_name in FLOATS:
        return raw.astype(np.float32)
    return np.array(raw)
