"""The event loop `driftgate serve` runs on: uvloop when it is installed, else asyncio's own.

uvloop (libuv; sockets, timers and callbacks in C) makes every request cheaper on the same
code: the loop's own work is a large part of a vector query's cost. It is optional (the
`fast` extra, `pip install 'driftgate[fast]'`): without it, or with DRIFTGATE_EVENT_LOOP=asyncio,
the standard loop runs, with the same behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None (asyncio's default loop) when absent or turned off."""
    if os.environ.get("DRIFTGATE_EVENT_LOOP", "").strip().lower() == "asyncio":
        log.info("event loop: asyncio (DRIFTGATE_EVENT_LOOP=asyncio)")
        return None
    try:
        import uvloop
    except ImportError:
        log.info("event loop: asyncio (install uvloop for a cheaper one: pip install 'driftgate[fast]')")
        return None
    log.info("event loop: uvloop %s", uvloop.__version__)
    return uvloop.new_event_loop
