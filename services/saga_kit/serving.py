"""Running HTTP servers inside a service's own asyncio process.

Each service runs its FastAPI app, its gRPC server and its background loops in
one event loop and owns SIGTERM handling itself (stop accepting, finish work,
close pools). uvicorn would otherwise install its own signal handlers and
re-raise the signal on exit, so the embedded server here captures none.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator
from typing import Any

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def http_server(app: Any, host: str, port: int) -> EmbeddedServer:
    # httptools parses HTTP in C; uvicorn's default when it is importable, named here so
    # that a missing wheel fails at start instead of falling back to h11 (pure Python,
    # ~15 % of the webhook listener's CPU per notification in py-spy).
    return EmbeddedServer(
        uvicorn.Config(app, host=host, port=port, log_config=None, http="httptools")
    )


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
