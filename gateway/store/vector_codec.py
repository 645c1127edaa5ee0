"""pgvector's `vector` and `halfvec` types on asyncpg connections, the same with pgvector-python 0.3 and 0.4+.

pgvector 0.4 moved `Vector` to the package root and decodes to `Vector` objects, where 0.3
decodes to numpy arrays; langchain-postgres (whose PGVector tables can be adopted, and whose
class the adoption test runs) still requires pgvector<0.4. So the codec is declared here once:
vectors go in as lists, numpy arrays or `Vector`s and come out as `Vector` (`.to_numpy()`).

A `halfvec` (float16, a table's storage option) is read as the same float32 `Vector`, so the
code above the store never sees the difference; its binary form is written here with numpy
(pgvector-python 0.3's HalfVector and 0.4's differ), the layout of pgvector's halfvec_send:
a uint16 dimension, a uint16 zero, then the float16 values, all big-endian.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from typing import Any, cast

import asyncpg
import numpy as np

from gateway.domain.errors import VectorOutOfRange
from gateway.domain.storage import HALFVEC_MAX

try:
    from pgvector import Vector
except ImportError:  # pgvector 0.3
    from pgvector.utils import Vector

__all__ = ["Vector", "halfvec_range", "register_vector"]

_HEADER = struct.Struct(">HH")


def _encode(value: object) -> bytes:
    vector = value if isinstance(value, Vector) else Vector(cast(Any, value))  # a list or an array
    return vector.to_binary()


def _encode_half(value: object) -> bytes:
    array = value.to_numpy() if isinstance(value, Vector) else np.asarray(value, dtype=np.float32)
    if array.size and float(np.abs(array).max()) > HALFVEC_MAX:
        raise ValueError(f"a halfvec holds values up to {HALFVEC_MAX:g} in magnitude")
    return _HEADER.pack(array.size, 0) + array.astype(">f2").tobytes()


def _decode_half(data: bytes) -> Vector:
    dim, _ = _HEADER.unpack_from(data)
    values = np.frombuffer(data, dtype=">f2", count=dim, offset=_HEADER.size)
    return Vector(values.astype(np.float32))


async def register_vector(conn: asyncpg.Connection, schema: str = "public") -> None:
    await conn.set_type_codec("vector", schema=schema, encoder=_encode, decoder=Vector.from_binary, format="binary")
    await conn.set_type_codec("halfvec", schema=schema, encoder=_encode_half, decoder=_decode_half, format="binary")


@contextlib.contextmanager
def halfvec_range(model_key: str) -> Iterator[None]:
    """Turn PostgreSQL's refusal of a float32 value too large for a `halfvec` column into a 400.

    Unit vectors never come near the limit; a remote model that answers unnormalised vectors
    could. The statement fails as a whole, so nothing of it is written.
    """
    try:
        yield
    except asyncpg.NumericValueOutOfRangeError as exc:
        raise VectorOutOfRange(
            f"model {model_key!r} produced a vector with a value beyond {HALFVEC_MAX:g} in magnitude, which its "
            "halfvec table cannot store; nothing was written. Store this model as `vector` (the default "
            "storage), or have the provider return normalised vectors"
        ) from exc
