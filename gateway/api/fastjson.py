"""orjson where it gives exactly the standard library's answer, the standard library elsewhere.

Parsing and writing JSON was a fifth of the gateway's CPU per vector query (a 384-float body
takes ~175 us with `json.loads` and ~20 us with orjson). The API's contract is the standard
library's behaviour (requests.py, responses.py), so orjson is used only where it provably
agrees, and every other case goes the old way:

- `loads`: orjson turns integers beyond 64 bits into floats and nests deeper than Python's
  recursion limit allows; bodies with a run of 19+ digits outside a fraction, or with 500+
  brackets, are therefore left to the standard path (which bounds integers and depth). A body
  orjson rejects (NaN, a lone surrogate, invalid UTF-8, a BOM, a syntax error) goes the
  standard way too, so every error message stays the same. Returns NOT_FAST when it declines.
- `dumps`: orjson writes NaN and Infinity as null where the API must refuse them loudly; any
  output containing `null` is therefore written again by the strict standard encoder. Types the
  standard encoder refuses (dataclasses, datetimes, subclasses) are refused by orjson too
  (passthrough options) and go the standard way, which raises as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

NOT_FAST: Any = object()  # `loads` declined: parse with the standard library

_MAX_INT_DIGITS_FAST = 18  # every integer of up to 18 digits is exact in orjson
_MAX_BRACKETS_FAST = 500  # far below any recursion limit
# digits -> "0", a fraction's dot -> ".", anything else -> " ": an integer literal of 19+
# digits then shows as " 000..." (or at the very start), a fraction as ".000..."
_SHAPE = bytes(
    ord("0") if chr(c).isdigit() and c < 128 else ord(".") if c == ord(".") else ord(" ") for c in range(256)
)
_LONG_RUN = b"0" * (_MAX_INT_DIGITS_FAST + 1)
_LONG_INTEGER = b" " + _LONG_RUN

_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


def loads(raw: bytes) -> Any:
    """The parsed body, or NOT_FAST when only the standard parser gives the contract's answer."""
    if raw.count(b"[") + raw.count(b"{") >= _MAX_BRACKETS_FAST:
        return NOT_FAST
    shape = raw.translate(_SHAPE)
    if _LONG_INTEGER in shape or shape.startswith(_LONG_RUN):
        return NOT_FAST
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return NOT_FAST


def dumps(data: Any, strict: Callable[[Any], str]) -> bytes:
    """`strict(data)` as UTF-8 bytes, written by orjson whenever that is the same JSON."""
    try:
        body = orjson.dumps(data, option=_PASSTHROUGH)
    except TypeError:  # a type only the standard encoder decides about (it may raise)
        return strict(data).encode()
    if b"null" in body:  # maybe a NaN or an infinity: let the strict encoder judge
        return strict(data).encode()
    return body
