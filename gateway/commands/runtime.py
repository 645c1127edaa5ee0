"""How `driftgate serve` runs: on which event loop, and with the start-up heap frozen.

Event loop: uvloop when it is installed, else asyncio's own.

uvloop (libuv; sockets, timers and callbacks in C) makes every request cheaper on the same
code: the loop's own work is a large part of a vector query's cost. It is optional (the
`fast` extra, `pip install 'driftgate[fast]'`): without it, or with DRIFTGATE_EVENT_LOOP=asyncio,
the standard loop runs, with the same behaviour.

Frozen heap: once the app has started (models, tokenizers, libraries: ~100,000 objects), those
objects are moved out of the garbage collector's reach (`gc.freeze`). Otherwise every full
collection walks them all again: 30-150 ms with the event loop stopped, the bulk of a query's
p99 under load (bench/gateway_overhead.py: p99 at 16 connections 90 ms -> 16 ms).
"""

from __future__ import annotations

import asyncio
import gc
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


def freeze_startup_objects() -> None:
    """Collect once, then keep everything alive so far out of future collections (see above)."""
    gc.collect()
    gc.freeze()
    log.info("start-up heap frozen: %d objects out of the garbage collector's way", gc.get_freeze_count())
