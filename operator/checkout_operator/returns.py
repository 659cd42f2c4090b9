"""Giving back money that reached an order whose checkout did not settle by it.

Works from the journal (``payment_returns``), not from Checkout resources, so a
payment after the resource was deleted (by hand or by the TTL delete) is found
as surely as one on a live Expired checkout. Each watched order is asked about
on Midtrans' status API, within the poller's call budget, until its Snap page
can no longer be paid; whatever was paid is voided (capture, pending) or
refunded (settlement). A refund Midtrans refuses is retried with a growing
delay and surfaced: a ``RefundRefused`` Warning Event and condition on the
Checkout (when it still exists), the ``checkout_refunds_failing`` gauge, and the
row in ``payment_returns`` (see docs/trust-model.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from midtrans import MidtransClientError, MidtransError, TransactionStatus
from saga_kit.logs import about_order
from saga_kit.supervise import Backoff, every

from . import metrics
from .actions import Retry, confirmed_status, write_status
from .breaker import CircuitOpen
from .payments import ReturnStep, refundable_amount, return_step
from .poller import TokenBucket
from .readmodel import Record
from .reconciler import Reconciler
from .returns_store import CLOSED, RETURNED, Watched
from .saga import TERMINAL, Phase, View, with_condition

log = logging.getLogger(__name__)

BATCH = 50
RECHECK_SOON = dt.timedelta(seconds=5)
RECHECK_AFTER_ERROR = dt.timedelta(seconds=30)
MAX_REFUND_BACKOFF = dt.timedelta(hours=1)


def refund_backoff(attempts: int, base: dt.timedelta) -> dt.timedelta:
    """base, 2 base, 4 base, ... at most an hour between tries of a refused refund."""
    backoff = Backoff(base.total_seconds(), MAX_REFUND_BACKOFF.total_seconds())
    return dt.timedelta(seconds=backoff.delay(attempts))


class PaymentReturns:
    def __init__(self, reconciler: Reconciler, bucket: TokenBucket, tick: float = 1.0) -> None:
        self.reconciler = reconciler
        self.deps = reconciler.deps
        self.bucket = bucket
        self.tick = tick
        self._counted = False

    async def run(self, stop: asyncio.Event) -> None:
        await every(self.tick, self.check_due, stop, "checking payments to return")

    async def check_due(self) -> int:
        store = self.deps.returns
        due = await store.due(BATCH)
        for row in due:
            await self.bucket.take()
            try:
                with about_order(row.order_id):
                    await self.check(row)
            except Exception:
                log.exception("payment return of %s failed", row.midtrans_order_id)
                await store.recheck_in(row.midtrans_order_id, RECHECK_AFTER_ERROR)
        if due or not self._counted:  # the count changes only when rows are handled
            metrics.REFUNDS_FAILING.set(await store.count_refused())
            self._counted = True
        return len(due)

    async def check(self, row: Watched) -> None:
        deps, store, order = self.deps, self.deps.returns, row.midtrans_order_id
        record = await deps.readmodel.get(row.order_id)
        if record is None:
            await store.finish(order, CLOSED)
            return
        if record.paid_order_id == order:
            sold = self._ended_settled(record)
            if sold is None:  # still ending: look again once the phase is written
                await store.recheck_in(order, RECHECK_SOON)
                return
            if sold:  # this order bought the goods: its money stays
                await store.finish(order, CLOSED)
                return
            # Journaled by a settlement whose status write lost to another ending
            # (expiry, cancel): the checkout did not sell by it, so the money goes back.
            await deps.readmodel.unmark_paid(record.order_id, order)
        try:
            ts = await confirmed_status(deps, order)
        except Retry as exc:
            log.info("status of %s (to return): %s", order, exc)
            await store.recheck_in(order, RECHECK_AFTER_ERROR)
            return
        step = return_step(ts, deps.clock() > row.watch_until)
        if step in (ReturnStep.VOID, ReturnStep.REFUND) and not await deps.readmodel.made_order(
            record.order_id, order
        ):
            await self._not_ours(row, step)
            return
        match step:
            case ReturnStep.WAIT:
                await store.recheck_in(
                    order, dt.timedelta(seconds=deps.settings.late_watch_interval)
                )
            case ReturnStep.CLOSED:
                await store.finish(order, CLOSED)
            case ReturnStep.RETURNED:
                await store.finish(order, RETURNED)
            case ReturnStep.VOID:
                assert ts is not None
                await self._void(row, record, ts)
            case ReturnStep.REFUND:
                assert ts is not None
                await self._refund(row, record, ts)

    async def _not_ours(self, row: Watched, step: ReturnStep) -> None:
        """Money on an order of this checkout's name that Midtrans never made for us.

        Only its maker can have handed out its page: another release sharing the
        merchant account with a checkout of the same name (docs/scale-out.md), or
        someone else holding the server key. Its money may well have bought goods there,
        so it is never voided or refunded here: logged and counted for a person to look
        at, and the watch ends.
        """
        order = row.midtrans_order_id
        metrics.PAYMENT_RETURNS.labels(step.value, "not-ours").inc()
        log.warning(
            "%s: money on Midtrans order %s, for which Midtrans gave this checkout no Snap"
            " page (refused to us as taken, or its answer lost, so nobody we served holds"
            " its page): left to whoever made it, not %s",
            row.order_id,
            order,
            "voided" if step is ReturnStep.VOID else "refunded",
        )
        await self.deps.returns.finish(order, CLOSED, "not-ours")

    def _ended_settled(self, record: Record) -> bool | None:
        """Whether the checkout really ended Settled; None while that is not known yet.

        The resource's phase counts while it exists (terminal phases never change); after
        its deletion, the journal's. ``paid_order_id`` alone is not proof: it is written
        before the status write, which may lose to an expiry.
        """
        body = self.reconciler.cache.get((record.namespace, record.name))
        if body is not None and body["metadata"]["uid"] == record.uid:
            phase = View.of(body).phase
        elif record.finished_at is not None:
            phase = Phase(record.phase)
        else:
            return None
        if phase not in TERMINAL:
            return None
        return phase is Phase.SETTLED

    async def _void(self, row: Watched, record: Record, ts: TransactionStatus) -> None:
        deps, order = self.deps, row.midtrans_order_id
        try:
            await deps.breaker.call(lambda: deps.midtrans.cancel(order))
        except MidtransClientError as exc:
            # 412: it moved on meanwhile (settled, say); look again soon and decide anew.
            log.info("void of %s refused (%s): looking again", order, exc)
            metrics.PAYMENT_RETURNS.labels("void", "refused").inc()
            await deps.returns.recheck_in(order, RECHECK_SOON)
            return
        except (MidtransError, CircuitOpen) as exc:
            log.info("void of %s: %s", order, exc)
            await deps.returns.recheck_in(order, RECHECK_AFTER_ERROR)
            return
        message = f"{ts.transaction_status} payment {_why_returned(record, order)}: voided"
        await self._returned(row, record, "void", ts.amount_idr, "Voided", message)

    async def _refund(self, row: Watched, record: Record, ts: TransactionStatus) -> None:
        deps, order = self.deps, row.midtrans_order_id
        amount = refundable_amount(ts)
        if amount <= 0:
            await deps.returns.finish(order, RETURNED)
            return
        reason = f"checkout {record.order_id} did not settle by this payment ({record.phase})"
        try:
            await deps.breaker.call(
                lambda: deps.midtrans.refund(
                    order, amount, reason, refund_key=f"return-{order}-{ts.refunded_idr}"
                )
            )
        except MidtransClientError as exc:
            metrics.PAYMENT_RETURNS.labels("refund", "refused").inc()
            attempts = row.attempts + 1
            delay = refund_backoff(attempts, deps.settings.refund_retry_base)
            await deps.returns.refused(order, str(exc), delay)
            message = (
                f"Midtrans refused the refund of {amount} on order {order} "
                f"({attempts} tries so far; next in {int(delay.total_seconds())} s): {exc}"
            )
            log.error("%s: %s", record.order_id, message)
            await self._surface(record, "RefundRefused", message, failed=True)
            return
        except (MidtransError, CircuitOpen) as exc:
            log.info("refund of %s: %s", order, exc)
            await deps.returns.recheck_in(order, RECHECK_AFTER_ERROR)
            return
        message = f"payment of {amount} {_why_returned(record, order)}: refunded"
        await self._returned(row, record, "refund", amount, "Refunded", message)

    async def _returned(
        self, row: Watched, record: Record, how: str, amount: int | None, reason: str, message: str
    ) -> None:
        await self.deps.returns.finish(row.midtrans_order_id, RETURNED, how, amount)
        metrics.PAYMENT_RETURNS.labels(how, "done").inc()
        log.warning("%s: %s", record.order_id, message)
        await self._surface(record, reason, message)

    async def _surface(
        self, record: Record, reason: str, message: str, *, failed: bool = False
    ) -> None:
        """Say so on the Checkout, if it still exists: a condition and a Warning Event."""
        deps = self.deps

        async def act(body: dict[str, Any]) -> dict[str, Any] | None:
            if body["metadata"]["uid"] != record.uid:
                return None
            now, generation = deps.clock(), int(body["metadata"].get("generation", 1))
            conditions = (body.get("status") or {}).get("conditions") or []
            conditions = with_condition(
                conditions, "LatePayment", True, reason, message, now, generation
            )
            if failed or any(c.get("type") == "RefundFailed" for c in conditions):
                # Turns False again once a later try went through.
                conditions = with_condition(
                    conditions, "RefundFailed", failed, reason, message, now, generation
                )
            updated = await write_status(deps, body, {"conditions": conditions})
            event = "RefundRefused" if failed else "LatePayment"
            await deps.kube.event(updated, "Warning", event, message)
            return updated

        try:
            key = (record.namespace, record.name)
            await self.reconciler.exclusive(key, act, attempts=3, whole=True)
        except Exception as exc:  # the journal row is what counts; the resource is a view
            log.info("could not note %s on %s/%s: %r", reason, record.namespace, record.name, exc)


def _why_returned(record: Record, order: str) -> str:
    """Why a payment on ``order`` holds no goods, for the Event and the log."""
    if record.midtrans_order_id is not None and order != record.midtrans_order_id:
        return f"on order {order}, a payment page the checkout does not show"
    return f"on order {order}, after the checkout ended ({record.phase})"
