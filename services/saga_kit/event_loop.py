"""Running a process' main coroutine on the event loop every service uses: uvloop.

uvloop (libuv, the same authors as asyncpg) runs the loop's scheduling and socket I/O
in C. ``SAGA_EVENT_LOOP=asyncio`` falls back to the standard loop, should a library
ever misbehave on uvloop; any other value stops the process at start.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import uvloop

from .settings import ConfigError

T = TypeVar("T")
LOOPS = ("uvloop", "asyncio")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The constructor of the configured event loop (``SAGA_EVENT_LOOP``)."""
    name = os.environ.get("SAGA_EVENT_LOOP", "").strip().lower() or "uvloop"
    if name not in LOOPS:
        raise ConfigError(f"SAGA_EVENT_LOOP must be one of {', '.join(LOOPS)}, not {name!r}")
    return uvloop.new_event_loop if name == "uvloop" else asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the configured loop."""
    try:
        factory = loop_factory()
    except ConfigError:
        main.close()  # never awaited: say so without a "never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
