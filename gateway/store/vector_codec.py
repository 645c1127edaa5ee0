"""pgvector's `vector` type on asyncpg connections, the same with pgvector-python 0.3 and 0.4+.

pgvector 0.4 moved `Vector` to the package root and decodes to `Vector` objects, where 0.3
decodes to numpy arrays; langchain-postgres (whose PGVector tables can be adopted, and whose
class the adoption test runs) still requires pgvector<0.4. So the codec is declared here once:
vectors go in as lists, numpy arrays or `Vector`s and come out as `Vector` (`.to_numpy()`).
"""

from __future__ import annotations

from typing import Any, cast

import asyncpg

try:
    from pgvector import Vector
except ImportError:  # pgvector 0.3
    from pgvector.utils import Vector

__all__ = ["Vector", "register_vector"]


def _encode(value: object) -> bytes:
    vector = value if isinstance(value, Vector) else Vector(cast(Any, value))  # a list or an array
    return vector.to_binary()


async def register_vector(conn: asyncpg.Connection, schema: str = "public") -> None:
    await conn.set_type_codec("vector", schema=schema, encoder=_encode, decoder=Vector.from_binary, format="binary")
