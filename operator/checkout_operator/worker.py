"""The arq worker that runs deferred expiry jobs.

``python -m arq checkout_operator.worker.WorkerSettings`` (or
``python -m checkout_operator.worker``). A job expires its checkout only if it
is still AwaitingPayment and due (by the deadline journaled with its terms, or an
earlier ``expiresAt``); the decision and the write are the same compare-and-swap the
operator uses, so a payment settling at the same moment wins or loses cleanly. If
Redis loses the job, the operator expires the checkout itself when that deadline has
passed.

With ``CHECKOUT_WORKER_HEALTH_PORT`` set, the worker serves ``/healthz`` (alive) and
``/readyz`` (started, and Redis answered its event loop lately) for the probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, ClassVar

from arq import Retry as ArqRetry
from arq import run_worker
from arq.connections import ArqRedis, RedisSettings

from saga_kit import event_loop
from saga_kit.logs import setup_logging
from saga_kit.settings import ConfigError, env_int, env_secret, env_str, port_problem
from saga_kit.supervise import Heartbeat, Readiness

from .actions import Deps, Retry, expire
from .app import build_deps
from .clients.announcer import EXPIRE_JOB
from .probes import serve_probes
from .readmodel import Record
from .saga import Phase, View, payment_deadline
from .settings import OperatorSettings

log = logging.getLogger(__name__)


async def expire_checkout(ctx: dict[str, Any], namespace: str, name: str, uid: str) -> str:
    deps = ctx["deps"]
    record = await _journaled(deps, name, uid)
    if record is not None and record.finished_at is not None:
        return f"already {record.phase}"
    # The deadline journaled with the terms, not the resource's editable expiresAt,
    # decides (``saga.payment_deadline``): a later one written by hand does not hold the
    # stock past the Snap page.
    journaled = record.expires_at if record is not None else None
    for _ in range(5):
        body = await deps.kube.get(namespace, name)
        if body is None or body["metadata"]["uid"] != uid:
            return "gone"
        view = View.of(body)
        if view.phase is not Phase.AWAITING_PAYMENT:
            return f"already {view.phase.value}"
        due = payment_deadline(view.expires_at, journaled)
        remaining = (due - deps.clock()).total_seconds() if due else 0
        if remaining > 0:  # clocks differ a little: come back when it is due
            raise ArqRetry(defer=remaining + 0.1)
        try:
            updated = await expire(deps, body)
        except Retry:
            continue  # lost a race: re-read and decide again
        return str(updated["status"]["phase"])
    raise ArqRetry(defer=1)


async def _journaled(deps: Deps, name: str, uid: str) -> Record | None:
    """This checkout's journal row (the name is the order id), if it can be read.

    Every checkout's job runs at its payment deadline, most of them long after it was
    paid: an apiserver GET each (at 20 paid/s, 20 GETs/s a quarter of an hour later). The
    journal records an ending only once the resource has ended or is gone, and an ended
    phase never changes, so its ending saves the read. It also holds the deadline.
    """
    try:
        record = await deps.readmodel.get(name)
    except Exception as exc:  # the journal away: the resource decides, as before
        log.warning("%s: journal not read (%r); reading the Checkout", name, exc)
        return None
    if record is None or record.uid != uid:
        return None
    return record


HEALTH_PORT = "CHECKOUT_WORKER_HEALTH_PORT"
REDIS_PING_SECONDS = 5.0


def _health_port() -> int:
    port = env_int(HEALTH_PORT, 0)
    if problem := port_problem(port, off_allowed=True):
        raise ConfigError(f"{HEALTH_PORT} {problem}")
    return port


async def _ping_redis(redis: ArqRedis, heartbeat: Heartbeat) -> None:
    while True:
        try:
            await redis.ping()
            heartbeat.beat()
        except Exception as exc:  # not ready meanwhile; arq reconnects on its own
            heartbeat.fail(f"redis: {exc!r}")
        await asyncio.sleep(REDIS_PING_SECONDS)


async def startup(ctx: dict[str, Any]) -> None:
    setup_logging("checkout-expiry-worker")
    port = _health_port()
    readiness = Readiness()
    started = readiness.heartbeat("startup")
    if port:  # alive from here on; ready once connected
        serve_probes(port, readiness)
    stack = contextlib.AsyncExitStack()
    ctx["stack"] = stack
    ctx["deps"] = await build_deps(
        OperatorSettings.from_env(), stack, component="checkout-expiry-worker"
    )
    started.beat()
    if port:
        redis = readiness.heartbeat("redis", stale_after=6 * REDIS_PING_SECONDS)
        ctx["health"] = asyncio.create_task(_ping_redis(ctx["redis"], redis))


async def shutdown(ctx: dict[str, Any]) -> None:
    if health := ctx.get("health"):
        health.cancel()
    await ctx["stack"].aclose()


def _redis_settings() -> RedisSettings:
    return RedisSettings.from_dsn(
        env_secret("CHECKOUT_REDIS_URL", "redis://127.0.0.1:6379/0").value
    )


class WorkerSettings:
    functions: ClassVar[list[Any]] = [expire_checkout]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = _redis_settings()
    queue_name = env_str("CHECKOUT_EXPIRY_QUEUE", "arq:queue")
    max_tries = 20
    job_timeout = 60
    keep_result = 3600
    handle_signals = True
    # A short health-check interval lets `scripts/up` (and probes) see a live worker.
    health_check_interval = 5


assert expire_checkout.__name__ == EXPIRE_JOB


def main() -> None:
    asyncio.set_event_loop(event_loop.loop_factory()())
    run_worker(WorkerSettings)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
