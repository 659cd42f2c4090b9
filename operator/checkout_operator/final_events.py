"""Every ending reaches the Product service: the final-event outbox and its check.

The journal is the outbox: an ending is recorded (``finished_at``, the phase) before
its final event is published, and ``final_event_published`` says whether that
happened. This loop picks up every ending the saga did not announce (a crash between
the two, a NATS outage) and publishes it. It then asks the Product service whether
the reservation is closed; while it is still open (the event was lost on the way, or
dead-lettered by an older consumer), the event is published again under a fresh
message id, with a growing delay. A checkout is done here once its reservation is
closed or was never made.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import grpc

from saga_kit.supervise import Backoff, every

from . import metrics
from .actions import Deps
from .readmodel import Record
from .saga import FINAL_EVENT, Phase

log = logging.getLogger(__name__)

BATCH = 100
GRACE = dt.timedelta(seconds=30)  # the usual path publishes at once; the consumer is quick
MAX_DELAY = dt.timedelta(minutes=10)


def recheck_delay(attempts: int) -> dt.timedelta:
    """30 s, 1 min, 2 min, ... at most 10 min between looks at a reservation left open."""
    backoff = Backoff(GRACE.total_seconds(), MAX_DELAY.total_seconds())
    return dt.timedelta(seconds=backoff.delay(attempts + 1))


class FinalEvents:
    def __init__(self, deps: Deps, tick: float = 5.0, grace: dt.timedelta = GRACE) -> None:
        self.deps = deps
        self.tick = tick
        self.grace = grace

    async def run(self, stop: asyncio.Event) -> None:
        await every(self.tick, self.check_due, stop, "checking final events")

    async def check_due(self) -> int:
        deps = self.deps
        due = await deps.readmodel.final_events_due(self.grace, BATCH)
        closed: list[str] = []  # nothing held, or the Product service shows it closed
        asked: list[Record] = []  # announced: is the reservation closed?
        for record in due:
            if not record.reserve_attempted:
                closed.append(record.order_id)  # nothing was ever held
            elif await self._announced(record):
                asked.append(record)
        try:  # one call for the batch (it was one GetReservation per ended checkout)
            held = await deps.products.open_reservations([r.order_id for r in asked])
        except grpc.aio.AioRpcError as exc:  # the Product service is away: later
            log.info("reservation states unknown: %s", exc.code().name)
            for record in asked:
                await deps.readmodel.final_event_recheck(record.order_id, self.grace)
            asked, held = [], set()
        closed += [r.order_id for r in asked if r.order_id not in held]
        await deps.readmodel.reservations_closed(closed)
        for record in asked:
            if record.order_id in held:
                await self._publish_again(record)
        return len(due)

    async def _announced(self, record: Record) -> bool:
        """Whether the ending's final event went out (so the reservation is worth a
        look); if not, publish it now or leave it to the reconciler, and look later."""
        deps, order = self.deps, record.order_id
        phase = Phase(record.phase)
        if phase is Phase.SETTLED and record.paid_order_id is None:
            # Settled without a verified payment in the journal: the reconciler
            # decides from Midtrans (actions.ensure_final_event), not this relay.
            await deps.readmodel.final_event_recheck(order, self.grace)
            return False
        if record.final_event_published:
            return True
        event = FINAL_EVENT[phase]
        await deps.announcer.publish(order, event)
        await deps.readmodel.mark(order, final_event_published=True)
        metrics.FINAL_EVENTS_RELAYED.labels("unpublished").inc()
        log.warning("%s: published its final event %r, left unpublished", order, event)
        await deps.readmodel.final_event_recheck(order, self.grace)
        return False

    async def _publish_again(self, record: Record) -> None:
        """The ending was announced but the reservation still holds stock: the event was
        lost on the way (or dead-lettered), so it goes out again under a fresh id."""
        phase = Phase(record.phase)
        event = FINAL_EVENT[phase]
        attempts = record.final_event_attempts + 1
        await self.deps.announcer.publish(record.order_id, event, redo=attempts)
        metrics.FINAL_EVENTS_RELAYED.labels("reservation_open").inc()
        log.warning(
            "%s: ended %s but its reservation is still open: %r published again (%d)",
            record.order_id,
            phase.value,
            event,
            attempts,
        )
        await self.deps.readmodel.final_event_recheck(
            record.order_id, recheck_delay(attempts), republished=True
        )
