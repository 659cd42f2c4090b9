"""``python -m user_service``: REST (uvicorn) and gRPC (grpc.aio) in one process.

Both servers share one event loop, one Postgres pool and one Redis client. The
process handles SIGTERM and SIGINT itself, once for both servers: the gRPC health
turns NOT_SERVING, uvicorn stops accepting and finishes its requests, the gRPC
server finishes its calls (within a grace period), the pool and Redis are closed,
and the process exits 0. uvicorn's own signal capture is disabled because it
would re-raise the signal after its shutdown and turn a clean exit into death by
SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys

import asyncpg
import redis.exceptions
import uvicorn

from saga_kit import event_loop
from saga_kit.logs import setup_logging
from saga_kit.serving import EmbeddedServer, stop_on_signals
from saga_kit.settings import ConfigError

from .app import create_rest_app, open_runtime, start_grpc_server
from .config import UserServiceConfig

log = logging.getLogger("user_service")

GRPC_GRACE_SECONDS = 5.0


def _listen(host: str, port: int) -> socket.socket:
    """Bind the HTTP socket here, so a busy port is an error we report, not uvicorn's
    sys.exit from inside a task (which would skip the orderly shutdown)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


async def _serve_http(http: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await http.serve(sockets=[sock])
    except SystemExit as exc:  # uvicorn's way of reporting a failed start-up
        raise RuntimeError(f"the HTTP server failed to start (exit code {exc.code})") from None


async def serve(config: UserServiceConfig) -> int:
    """Run until SIGTERM/SIGINT; 0 after a clean shutdown, 1 when a server cannot start."""
    stop = stop_on_signals()  # for both servers at once

    async with contextlib.AsyncExitStack() as cleanup:
        try:
            runtime = await open_runtime(config)
            cleanup.push_async_callback(runtime.close)
            sock = _listen(config.http_host, config.http_port)
            cleanup.callback(sock.close)
            grpc_server = await start_grpc_server(runtime)
            cleanup.push_async_callback(grpc_server.stop, GRPC_GRACE_SECONDS)
        except (OSError, RuntimeError, asyncpg.PostgresError, redis.exceptions.RedisError) as exc:
            # No traceback: these are about the environment (a busy port, a database
            # that does not answer), and the message says which.
            log.error("cannot start: %s", exc)
            return 1
        log.info("gRPC listening on %s:%d", config.grpc_host, grpc_server.port)

        http = EmbeddedServer(
            uvicorn.Config(
                create_rest_app(runtime),
                lifespan="off",  # resources are opened above, not in the app
                log_config=None,  # keep the JSON logging of setup_logging
                server_header=False,
                http="httptools",  # as saga_kit.serving.http_server: C, not h11
            )
        )
        http_task = asyncio.create_task(_serve_http(http, sock), name="http")
        stop_task = asyncio.create_task(stop.wait(), name="stop")
        await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        if http_task.done():
            # uvicorn returned without being asked to.
            error = http_task.exception()
            log.error("the HTTP server stopped unexpectedly: %s", error)
            exit_code = 1
        else:
            log.info("shutting down")
            exit_code = 0
        http.should_exit = True
        # Both servers drain at once; the exit stack then closes the pool and Redis.
        results = await asyncio.gather(
            grpc_server.stop(GRPC_GRACE_SECONDS), http_task, return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and exit_code == 0:
                log.error("shutdown failed: %s", result)
                exit_code = 1
    log.info("stopped")
    return exit_code


def main() -> int:
    try:
        config = UserServiceConfig.from_env()
    except ConfigError as exc:
        setup_logging("user-service")
        logging.getLogger("user_service").error("configuration error: %s", exc)
        return 2
    setup_logging("user-service", config.log_level)
    return event_loop.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
