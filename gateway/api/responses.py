"""The one way the API writes JSON: strict, so no answer ever carries NaN or Infinity.

A non-finite number reaching a response is a bug upstream (inputs are validated); failing
loudly (500, logged) is better than sending a body that JSON parsers reject.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

from gateway.api import fastjson

strict_dumps = functools.partial(json.dumps, allow_nan=False)


def json_response(data: Any, *, status: int = 200, headers: dict | None = None) -> web.Response:
    body = fastjson.dumps(data, strict_dumps)  # orjson where it writes the same JSON (fastjson.py)
    return web.Response(body=body, status=status, headers=headers, content_type="application/json", charset="utf-8")
