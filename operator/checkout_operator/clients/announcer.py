"""Announcing the saga's progress: transaction events on JetStream, expiry jobs in arq."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from nats.js import JetStreamContext
from redis.exceptions import RedisError

from saga_kit.events import EventType, Topology, TransactionEvent, publish

EXPIRE_JOB = "expire_checkout"

log = logging.getLogger(__name__)


def expiry_job_id(uid: str) -> str:
    """Deterministic per checkout: arq keeps one job per id, so re-scheduling is a no-op."""
    return f"expire:{uid}"


class Announcer:
    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        arq: ArqRedis | None,
        queue_name: str = "arq:queue",
    ) -> None:
        self.js = js
        self.topology = topology
        self._arq = arq
        self._queue_name = queue_name

    async def publish(self, order_id: str, event: str, redo: int = 0) -> None:
        """Publish with message id ``<order>:<event>``: JetStream drops a republish,
        unless ``redo`` asks for a deliberate one (see ``final_events``)."""
        await publish(
            self.js,
            self.topology,
            TransactionEvent(transaction_id=order_id, type=EventType(event)),
            redo,
        )

    async def schedule_expiry(self, namespace: str, name: str, uid: str, at: dt.datetime) -> Any:
        if self._arq is None:
            return None
        return await self._arq.enqueue_job(
            EXPIRE_JOB,
            namespace,
            name,
            uid,
            _job_id=expiry_job_id(uid),
            _defer_until=at,
            _queue_name=self._queue_name,
        )

    async def drop_expiry(self, uid: str) -> None:
        """The checkout ended: its expiry job has nothing left to do, so it leaves the queue
        now instead of running at the payment deadline (a worker's run, a journal read and
        an hour of its result in Redis for every paid checkout).

        Best effort: a job left behind (Redis away) finds the ending in the journal and
        does nothing (``worker.expire_checkout``).
        """
        if self._arq is None:
            return
        job_id = expiry_job_id(uid)
        try:
            async with self._arq.pipeline(transaction=True) as pipe:
                pipe.zrem(self._queue_name, job_id)
                pipe.delete(job_key_prefix + job_id)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("expiry job %s left queued (it will find the ending): %r", job_id, exc)
