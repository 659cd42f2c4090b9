"""Carrying out the saga's decisions: the effectful steps of a checkout.

Each step is idempotent, so the reconciler may run it again after a crash or a
conflict at any point:
* effects that decide something (reserve, payment page, cancel/expire at
  Midtrans) happen before the status write, and are idempotent themselves
  (Reserve per order id; the payment page is journaled in Postgres first);
* the status write is a compare-and-swap on the resourceVersion, so of racing
  writers (settlement, expiry, cancel) exactly one wins;
* announcements (events, the expiry job) follow the write and are re-checked
  against the journal every time the checkout is seen, so none is lost, and
  none is doubled (JetStream deduplicates by message id, arq by job id).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from midtrans import (
    ItemDetail,
    MidtransClient,
    MidtransClientError,
    MidtransConflict,
    MidtransError,
    MidtransServerError,
    TransactionStatus,
)
from saga_kit.checkout_status import (
    SETTLED_MESSAGE,
    SETTLED_REASON,
    settlement_patch,
    status_patch,
)
from saga_kit.payment_rules import payment_fields

from . import metrics
from .breaker import CircuitBreaker, CircuitOpen
from .clients.announcer import Announcer
from .clients.kube import Conflict, KubeCheckouts
from .clients.services import Products, ServiceRefused, Users
from .payments import payment_problem
from .readmodel import ReadModel, Record
from .returns_store import PaymentReturnsStore
from .saga import (
    FAILURES,
    FINAL_EVENT,
    TERMINAL,
    Action,
    Amounts,
    Compensation,
    Line,
    PaymentState,
    Phase,
    Reason,
    View,
    can_reach,
    new_snap_order_wait,
    payment_deadline,
    payment_items,
    payment_setup_over,
    payment_state,
    plan,
    price,
    spec_problem,
    timestamp,
    unpayable,
    with_condition,
)
from .settings import OperatorSettings

# The phase changes that get a Kubernetes Event by default (CHECKOUT_EVENTS=milestones).
MILESTONES = TERMINAL | {Phase.AWAITING_PAYMENT}

log = logging.getLogger(__name__)

_RESERVE_REASONS = {
    "PRODUCT_NOT_FOUND": Reason.PRODUCT_NOT_FOUND,
    "OUT_OF_STOCK": Reason.OUT_OF_STOCK,
    "INSUFFICIENT_STOCK": Reason.INSUFFICIENT_STOCK,
    "PRICE_MISMATCH": Reason.PRICE_MISMATCH,
    "TRANSACTION_ID_REUSED": Reason.DUPLICATE_ORDER_ID,
}


class Retry(Exception):
    """A transient failure: look at this checkout again after a backoff (and, with
    ``at``, not before then)."""

    def __init__(self, message: str, *, at: dt.datetime | None = None) -> None:
        super().__init__(message)
        self.at = at


@dataclass
class Deps:
    kube: KubeCheckouts
    readmodel: ReadModel
    users: Users
    products: Products
    midtrans: MidtransClient
    announcer: Announcer
    settings: OperatorSettings
    breaker: CircuitBreaker = field(
        default_factory=lambda: CircuitBreaker(transient=(MidtransServerError,))
    )
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    returns: PaymentReturnsStore = field(init=False)

    def __post_init__(self) -> None:
        self.returns = PaymentReturnsStore(self.readmodel.pool)


def _key(body: dict[str, Any]) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"


def _lines(body: dict[str, Any]) -> list[Line]:
    return [
        Line(i["productId"], int(i["unitPrice"]), int(i["quantity"])) for i in body["spec"]["items"]
    ]


async def reconcile(deps: Deps, body: dict[str, Any]) -> dt.datetime | None:
    """Take the next step for a checkout; return when to look at it again, if ever."""
    now = deps.clock()
    view = View.of(body)
    record: Record | None = None  # the journal, when read here
    deadline = None
    if view.phase is Phase.AWAITING_PAYMENT:
        # The deadline journaled with the terms, not the resource's editable expiresAt,
        # decides when it expires (``saga.payment_deadline``): remembered, or read.
        deadline = deps.readmodel.announced_deadline(body["metadata"]["uid"])
        if deadline is None and (record := await _own_record(deps, body)) is not None:
            deadline = record.expires_at
    step = plan(view, now, deps.settings.ttl_after_finished, deadline)
    began = time.perf_counter()
    try:
        match step.action:
            case Action.START:
                await start(deps, body)
            case Action.OFFER:
                await offer(deps, body, record)
            case Action.SETTLE:
                await settle_if_verified(deps, body)
            case Action.CANCEL:
                await cancel(deps, body)
            case Action.EXPIRE:
                await expire(deps, body)
            case Action.WAIT:
                await ensure_announced(deps, body, record)
            case Action.FINISH:
                await ensure_final_event(deps, body)
            case Action.DELETE:
                # Never before the ending is journaled and announced: the resource is
                # the last place that knows it otherwise.
                done = await ensure_final_event(deps, body)
                if not done and not await _ending_journaled(deps, body):
                    raise Retry("its ending is not journaled and announced yet")
                if await deps.kube.delete(body):
                    await deps.readmodel.mark_deleted(body["metadata"]["name"])
                    # Its DELETED event then has nothing to release or archive.
                    deps.readmodel.remember_archived(body["metadata"]["uid"])
                    log.info("deleted %s after its TTL", _key(body))
    finally:
        metrics.STEP_SECONDS.labels(step.action.value).observe(time.perf_counter() - began)
    return step.at


# --- the forward path ---------------------------------------------------------------


async def start(deps: Deps, body: dict[str, Any]) -> None:
    """Pending -> Authorized -> Reserved -> AwaitingPayment, written once."""
    meta, spec = body["metadata"], body["spec"]
    order_id = meta["name"]
    if problem := spec_problem(spec):  # before the journal, which could not store it
        await fail(deps, body, Reason.INVALID_REQUEST, problem)
        return
    lines = _lines(body)
    record = await deps.readmodel.register(
        order_id,
        meta["namespace"],
        meta["name"],
        meta["uid"],
        spec["userId"],
        spec.get("currency", "IDR"),
        lines,
    )
    if record is None:
        await fail(
            deps,
            body,
            Reason.DUPLICATE_ORDER_ID,
            f"order id {order_id} is already used by another checkout",
        )
        return
    if spec.get("cancelRequested"):
        await fail(deps, body, Reason.CANCEL_REQUESTED, "cancelled before payment")
        return

    voucher = None
    if code := spec.get("voucher"):
        voucher = deps.settings.vouchers.get(code)
        if voucher is None:
            await fail(deps, body, Reason.INVALID_VOUCHER, f"unknown voucher {code!r}")
            return
        if (problem := unpayable(price(lines, deps.settings.fee, voucher))) is not None:
            await fail(deps, body, Reason.INVALID_VOUCHER, f"voucher {code!r}: {problem}")
            return

    try:
        if not await deps.users.exists(spec["userId"]):
            await fail(deps, body, Reason.UNAUTHORIZED, f"user {spec['userId']} does not exist")
            return
    except grpc.aio.AioRpcError as exc:
        raise Retry(f"user service: {exc.code().name}") from exc
    except ServiceRefused as exc:
        await fail(deps, body, Reason.UNAUTHORIZED, exc.details.message)
        return

    if not record.reserve_attempted:
        # Journal before calling: if we crash after Reserve succeeded, a deletion
        # of this checkout still knows stock may be held and releases it.
        await deps.readmodel.mark(order_id, reserve_attempted=True)
    try:
        reserved = await deps.products.reserve(order_id, spec["userId"], lines)
    except grpc.aio.AioRpcError as exc:
        raise Retry(f"product service: {exc.code().name}") from exc
    except ServiceRefused as exc:
        reason = _RESERVE_REASONS.get(exc.details.reason, Reason.INVALID_REQUEST)
        if reason is Reason.DUPLICATE_ORDER_ID:
            # The id holds someone else's reservation, not ours: its ending must not
            # release their stock.
            await deps.readmodel.mark(order_id, reserve_attempted=False)
        await fail(deps, body, reason, exc.details.message)
        return
    amounts = price(reserved, deps.settings.fee, voucher)
    try:
        page_order, token, redirect_url = await payment_page(deps, body, record, reserved, amounts)
    except PaymentSetupFailed as exc:
        await deps.readmodel.record_lines(order_id, reserved)
        await fail(deps, body, Reason.PAYMENT_SETUP_FAILED, str(exc))
        return

    now = deps.clock()
    # A deadline journaled by an earlier try (its status write lost a race, or the
    # operator died after it) stays: the page, made before it, lapses by it.
    expires_at = record.expires_at or now + dt.timedelta(seconds=deps.settings.payment_ttl(spec))
    entered = list(_ENTERED_AWAITING)
    page = (page_order, token, redirect_url)
    status = _offer_patch(
        deps, body, now, entered, amounts.as_status(), page, expires_at, len(reserved)
    )
    # The journal holds what a payment is checked against before any buyer can pay.
    await deps.readmodel.record_terms(order_id, amounts.as_status(), expires_at, reserved)
    updated = await write_status(deps, body, status)
    # The journal's phase right after the status write: the API answers the POST as soon
    # as it sees the payment link, and what it then lists (the read model) says so.
    record = await deps.readmodel.record_phase(order_id, entered)
    await _announce_transitions(deps, updated, entered)
    await ensure_announced(deps, updated, record)


_ENTERED_AWAITING = (
    (Phase.AUTHORIZED, "UserAuthorized"),
    (Phase.RESERVED, "StockReserved"),
    (Phase.AWAITING_PAYMENT, "PaymentPageReady"),
)


def _offer_patch(
    deps: Deps,
    body: dict[str, Any],
    now: dt.datetime,
    entered: Sequence[tuple[Phase, str]],
    amounts: dict[str, int],
    page: tuple[str, str, str],
    expires_at: dt.datetime,
    products: int,
) -> dict[str, Any]:
    """The status write that hands the buyer the payment page: to AwaitingPayment.
    ``products``: how many are reserved."""
    spec = body["spec"]
    page_order, token, redirect_url = page
    return status_patch(
        body,
        now,
        Phase.AWAITING_PAYMENT,
        entered,
        conditions=[
            ("Authorized", True, "UserAuthorized", f"user {spec['userId']} exists"),
            ("StockReserved", True, "StockReserved", f"{products} products reserved"),
            ("PaymentReady", True, "SnapTokenIssued", deps.settings.payment_ttl_message(spec)),
            ("Ready", False, "AwaitingPayment", "waiting for the buyer to pay"),
        ],
        extra={
            "orderId": body["metadata"]["name"],
            "amounts": amounts,
            "payment": {
                "snapToken": token,
                "redirectUrl": redirect_url,
                # The page a payment must be for (the listener checks it).
                "midtransOrderId": page_order,
            },
            "expiresAt": timestamp(expires_at),
        },
    )


async def offer(deps: Deps, body: dict[str, Any], record: Record | None = None) -> None:
    """AwaitingPayment, but the resource does not show the payment page and deadline.

    Its phase was written by someone else (the CRD lets ``checkouts/status`` move a
    phase forward) before the start step's own write, which then lost the
    compare-and-swap; or the page was removed by hand. The buyer has no link and the
    poller does not ask about it. The journal's terms, page and deadline are what holds:
    they are written as the start step writes them (the phase stays), then announced as
    usual, so the checkout expires at the journaled deadline or is paid on that page.

    With none journaled the start step never got that far, and no page was ever offered:
    the checkout is cancelled and whatever it holds released, rather than left holding
    stock without a deadline. ``record``: the journal as the caller just read it.
    """
    if record is None:
        record = await _own_record(deps, body)
    terms = await deps.readmodel.terms(record.order_id) if record is not None else None
    if record is None or terms is None:
        message = (
            "status.phase AwaitingPayment was written before the operator journaled a "
            "payment page for it: none is offered"
        )
        log.warning("%s: %s; cancelled", _key(body), message)
        await fail(deps, body, Reason.PAYMENT_SETUP_FAILED, message)
        return
    status = body.get("status") or {}
    shown = any(h.get("phase") == Phase.AWAITING_PAYMENT.value for h in status.get("history") or [])
    # The history tells the operator's way into the phase once (the journal's too).
    entered = [] if shown else list(_ENTERED_AWAITING)
    patch = _offer_patch(
        deps,
        body,
        deps.clock(),
        entered,
        terms.amounts(),
        terms.page(),
        terms.expires_at,
        terms.lines,
    )
    del patch["phase"]  # it is there already (and may not be entered twice)
    updated = await write_status(deps, body, patch)
    log.warning(
        "%s: AwaitingPayment without its payment page shown: the journal's page and "
        "deadline written",
        _key(body),
    )
    await _announce_transitions(deps, updated, entered)
    await ensure_announced(deps, updated, record)


class PaymentSetupFailed(Exception):
    """No payment page can be had: the reservation must be released."""


async def payment_page(
    deps: Deps,
    body: dict[str, Any],
    record: Record,
    lines: Sequence[Line],
    amounts: Amounts,
) -> tuple[str, str, str]:
    """The Midtrans order id, Snap token and link of this checkout's payment page,
    created at most once per journaled attempt.

    Each attempt is journaled (with its Midtrans order id, also in ``payment_pages``)
    before Midtrans is called and its token right after. A retry after a transient
    failure (Midtrans away, the circuit open, an answer lost) asks again for the order
    id it journaled: so an outage uses up no attempts, and the buyer's page keeps the
    order id itself. Only if Midtrans refuses that order asked for again (it exists: the
    answer was lost; any 4xx counts, as its wording is not certain) does a new attempt
    take a new Midtrans order id (``<order>~<n>``): the lost page's token was never
    given to anyone, so it can never be paid and lapses. New orders are paced over the
    setup deadline and capped (``saga.new_snap_order_wait``): answers lost again and
    again wait for the next one's time rather than use up the attempts in seconds.
    Only the setup deadline, counted from the first Snap order, ends the checkout
    (``saga.payment_setup_over``). Recording is compare-and-set: if another writer (a
    second operator) recorded a page first, its page is returned and ours is orphaned,
    never shown.
    """
    if record.snap_token and record.redirect_url and record.midtrans_order_id:
        return record.midtrans_order_id, record.snap_token, record.redirect_url
    spec = body["spec"]
    order_id = record.order_id
    ttl = deps.settings.payment_ttl(spec)
    # Midtrans counts whole minutes: round up, so it never refuses a payment we would
    # still accept.
    expiry_minutes = max(1, math.ceil(ttl / 60))
    items = [ItemDetail(**item) for item in payment_items(lines, amounts)]
    customer = _customer(spec.get("customer"))
    # ``record`` is the journal as this step read it: an attempt journaled by an earlier
    # try that got no page is asked for again first.
    unanswered: tuple[int, str] | None = None
    attempts = deps.settings.max_payment_attempts
    attempt = record.payment_attempt  # the latest journaled
    if (
        record.midtrans_order_id
        and not record.snap_token
        and 1 <= record.payment_attempt <= attempts
    ):
        unanswered = (record.payment_attempt, record.midtrans_order_id)
    while True:
        # Midtrans' Snap expiry starts when it answers; the margin keeps our bound later.
        payable_until = deps.clock() + dt.timedelta(minutes=expiry_minutes + 5)
        asked_again = unanswered is not None
        journaled: tuple[int, str] | None
        if unanswered is not None:
            # Its listing's Snap expiry moves to this call's (one statement, retries only).
            (attempt, midtrans_order), unanswered = unanswered, None
            listed = await deps.readmodel.journal_snap_order(
                order_id, midtrans_order, attempt, payable_until
            )
            journaled = (attempt, midtrans_order) if listed else None
        else:
            # A new Snap order, when its pace and the cap allow (else Retry, or the end).
            await _pace_new_snap_order(deps, order_id, attempt + 1)
            # The attempt and its Snap order are journaled together, before Midtrans is
            # asked.
            journaled = await deps.readmodel.next_payment_attempt(order_id, payable_until, attempts)
        if journaled is None:  # another writer's page is recorded: that one is shown
            page = await deps.readmodel.payment_page(order_id)
            assert page is not None
            return page.midtrans_order_id, page.snap_token, page.redirect_url
        attempt, midtrans_order = journaled
        if attempt > attempts:  # another writer took the last one meanwhile: not listed
            continue
        try:
            snap = await deps.breaker.call(
                lambda order=midtrans_order: deps.midtrans.create_snap(  # type: ignore[misc]
                    order,
                    amounts.total,
                    items,
                    customer_details=customer,
                    expiry_minutes=expiry_minutes,
                )
            )
        except MidtransConflict:
            # Midtrans made this order but its answer was lost: a fresh order id.
            metrics.MIDTRANS_ERRORS.labels("snap", "conflict").inc()
            continue
        except MidtransClientError as exc:
            if asked_again:
                # How Midtrans words a reused order id is not certain: a refusal of one
                # asked for again may be that. A fresh order id tells (a refusal recurs).
                metrics.MIDTRANS_ERRORS.labels("snap", "refused-again").inc()
                log.info("%s: %s asked for again was refused: %s", _key(body), midtrans_order, exc)
                continue
            metrics.MIDTRANS_ERRORS.labels("snap", "refused").inc()
            raise PaymentSetupFailed(f"Midtrans refused the payment page: {exc}") from exc
        except (MidtransError, CircuitOpen) as exc:
            metrics.MIDTRANS_ERRORS.labels("snap", "transient").inc()
            deadline = deps.settings.payment_setup_deadline
            if isinstance(exc, CircuitOpen):
                # No call was made: that alone fails nothing. Open a whole cooldown past
                # the deadline, the circuit was opened again by a call that failed past
                # it (its trial calls are shared by every checkout: waiting for one's
                # own would hold the stock of many for the outage's length).
                deadline += dt.timedelta(seconds=deps.breaker.cooldown)
            ages = await deps.readmodel.snap_order_ages(order_id)
            if payment_setup_over(ages[0] if ages else None, deadline):
                raise PaymentSetupFailed(
                    f"Midtrans unavailable for longer than the setup deadline"
                    f" ({_seconds(deadline)}): {exc}"
                ) from exc
            raise Retry(f"Midtrans: {exc}") from exc
        page = await deps.readmodel.record_payment_page(
            order_id, midtrans_order, snap.token, snap.redirect_url
        )
        if page.midtrans_order_id != midtrans_order:
            # Its token is never handed out; it stays listed in payment_pages until
            # its Snap expiry. Cancel is best effort: Midtrans answers 404 while no
            # payment method has been chosen.
            metrics.ORPHANED_PAYMENT_PAGES.inc()
            log.warning(
                "%s: another writer recorded payment page %s first; ours (%s) is orphaned",
                _key(body),
                page.midtrans_order_id,
                midtrans_order,
            )
            try:
                await deps.midtrans.cancel(midtrans_order)
            except MidtransError as exc:
                log.info("%s: cancel of orphaned %s: %s", _key(body), midtrans_order, exc)
        return page.midtrans_order_id, page.snap_token, page.redirect_url


async def _pace_new_snap_order(deps: Deps, order_id: str, attempt: int) -> None:
    """Return when the checkout may make its ``attempt``-th Snap order now; else raise
    Retry at its time, or PaymentSetupFailed when it may make none (the cap reached and
    the setup deadline over)."""
    attempts = deps.settings.max_payment_attempts
    deadline = deps.settings.payment_setup_deadline
    # The first needs no read (nothing is journaled yet): the usual checkout's path.
    ages = await deps.readmodel.snap_order_ages(order_id) if attempt > 1 else None
    wait = new_snap_order_wait(attempt, attempts, deadline, ages)
    if wait is None:
        raise PaymentSetupFailed(
            f"no payment page after {attempts} attempts and the setup deadline"
            f" ({_seconds(deadline)})"
        )
    if wait > dt.timedelta(0):
        why = (
            f"{attempts} Snap orders made, none answered: the setup deadline is"
            if attempt > attempts
            else f"Snap order {attempt} is due"
        )
        raise Retry(f"{why} in {wait.total_seconds():.1f} s", at=deps.clock() + wait)


def _seconds(span: dt.timedelta) -> str:
    return f"{span.total_seconds():g} s"


def _customer(customer: dict[str, Any] | None) -> dict[str, Any] | None:
    if not customer:
        return None
    keys = {"firstName": "first_name", "lastName": "last_name", "email": "email", "phone": "phone"}
    return {keys[k]: v for k, v in customer.items() if k in keys and v}


async def ensure_announced(deps: Deps, body: dict[str, Any], record: Record | None = None) -> None:
    """AwaitingPayment: `committed` published and the expiry job scheduled (at the
    journaled deadline, see ``saga.payment_deadline``), once.

    ``record``: this resource's journal as the caller just wrote it (else it is read).
    """
    meta = body["metadata"]
    if record is None:
        if deps.readmodel.announced_known(meta["uid"]):
            return  # this process saw it all journaled: nothing to read
        record = await _own_record(deps, body)
    if record is None:
        return
    if record.phase != Phase.AWAITING_PAYMENT.value and record.finished_at is None:
        # The operator died (or lost the answer) between the status write and the
        # journal's: the terms were journaled before; the phase is brought level now.
        await deps.readmodel.record_phase(record.order_id, list(_ENTERED_AWAITING))
        metrics.READ_MODEL_LEVELLED.inc()
        log.warning("%s: the journal is brought level with AwaitingPayment", _key(body))
    # Each of the two, as far as the journal lacks it (both idempotent: message id, job
    # id); what was done is journaled even if the other failed, in one write for both.
    done: dict[str, bool] = {}
    try:
        if not record.committed_published:
            await deps.announcer.publish(record.order_id, "committed")
            done["committed_published"] = True
        if not record.expiry_scheduled:
            expires_at = payment_deadline(View.of(body).expires_at, record.expires_at)
            if expires_at is not None:
                await deps.announcer.schedule_expiry(
                    meta["namespace"], meta["name"], meta["uid"], expires_at
                )
                done["expiry_scheduled"] = True
    finally:
        if done:
            await deps.readmodel.mark(record.order_id, **done)
    if (
        (record.committed_published or "committed_published" in done)
        and (record.expiry_scheduled or "expiry_scheduled" in done)
        and record.expires_at is not None
    ):
        deps.readmodel.remember_announced(meta["uid"], record.expires_at)


async def ensure_final_event(deps: Deps, body: dict[str, Any]) -> bool:
    """Terminal: the journal records the ending and the product side has been told
    (settled / expired / cancelled), once. True when that is known done; else a caller
    that must be sure reads the journal again (the TTL delete reads it once, not twice)."""
    phase = Phase(body["status"]["phase"])
    if deps.readmodel.ending_known_done(body["metadata"]["uid"], phase):
        return True  # the start's one read of the journal showed it (a restart: thousands)
    record = await _own_record(deps, body)
    if record is None or record.ending_done(phase):
        return True
    if phase is Phase.SETTLED and record.paid_order_id is None:
        # Settled, but not by this operator's verified write (edited by hand, or a
        # crash between the journal and the status write): ask Midtrans.
        await _settled_without_journal(deps, body, record)
        return False
    if record.finished_at is None:
        reason = await _level(deps, body, record, phase)
        await _publish_final(deps, record, phase)
        # Its writer did not announce it (the listener settling, a crash in between).
        await _announce_transitions(deps, body, [(phase, reason)])
        return True
    await _publish_final(deps, record, phase)
    return True


async def _level(
    deps: Deps, body: dict[str, Any], record: Record, phase: Phase, *, deleted: bool = False
) -> str:
    """The resource ended in ``phase`` but the journal missed it (the operator died
    between the two writes, or the listener settled it): record the ending the
    resource shows; its reason."""
    status = body.get("status") or {}
    failure = status.get("failure") or {}
    history = status.get("history") or []
    last = history[-1] if history and history[-1].get("phase") == phase.value else {}
    reason = str(last.get("reason") or failure.get("reason") or phase.value)
    if phase is not Phase.SETTLED:
        await watch_unsettled(deps, record)
    await deps.readmodel.record_phase(
        record.order_id,
        [(phase, reason)],
        payment=status.get("payment") or None,
        failure=(str(failure.get("reason")), str(failure.get("message") or ""))
        if failure.get("reason")
        else None,
        deleted=deleted,
    )
    metrics.READ_MODEL_LEVELLED.inc()
    log.warning("%s: the journal is brought level with phase %s", _key(body), phase.value)
    return reason


async def _ending_journaled(deps: Deps, body: dict[str, Any]) -> bool:
    record = await _own_record(deps, body)
    if record is None:
        return True
    announced = record.final_event_published or not record.reserve_attempted
    return record.finished_at is not None and announced


async def _publish_final(
    deps: Deps, record: Record, phase: Phase, sold_by: str | None = None
) -> None:
    """Announce the journaled ending once. ``sold_by``: the Midtrans order a Settled
    checkout was sold by, when ``record`` was read before it was journaled."""
    announced = record.final_event_published
    if not announced and record.reserve_attempted:
        event = FINAL_EVENT[phase]
        await deps.announcer.publish(record.order_id, event)
        await deps.readmodel.mark(record.order_id, final_event_published=True)
        await deps.announcer.drop_expiry(record.uid)
        announced = True
    sold_by = sold_by or record.paid_order_id
    if phase is Phase.SETTLED and announced and sold_by:
        deps.readmodel.remember_sold(record.order_id, sold_by)


# --- endings -------------------------------------------------------------------------


async def fail(deps: Deps, body: dict[str, Any], reason: Reason, message: str) -> dict[str, Any]:
    """End the checkout for ``reason``, undoing what the failure table says."""
    outcome = FAILURES[reason]
    record = await _own_record(deps, body)  # read once: the journal as it is now
    if record is not None and outcome.compensation in (
        Compensation.CANCEL_PAYMENT,
        Compensation.EXPIRE_PAYMENT,
    ):
        settled = await _stop_payment(deps, record, outcome.compensation)
        if settled is not None and _verified(record, settled, "ending"):
            return await settle(deps, body, settled, record)  # the buyer paid first
    return await _end(deps, body, record, outcome.phase, reason, message)


def _ending_patch(
    body: dict[str, Any],
    now: dt.datetime,
    phase: Phase,
    reason: str,
    message: str,
    payment: dict[str, Any],
) -> dict[str, Any]:
    """The status write of an unsettled ending."""
    conditions = [("Ready", False, reason, message)]
    # What held before the ending holds no more: the stock went back, the page closed.
    current = (body.get("status") or {}).get("conditions") or []
    held = {c.get("type"): c.get("status") for c in current}
    for type_, gone in (("StockReserved", "stock released"), ("PaymentReady", "closed")):
        if held.get(type_) == "True":
            conditions.append((type_, False, reason, f"{gone}: {message}"))
    extra = {
        "orderId": body["metadata"]["name"],
        "failure": {"reason": reason, "message": message[:1024]},
        # A finished checkout hands out no payment link (null removes it in a merge patch).
        "payment": {**payment, "snapToken": None, "redirectUrl": None},
    }
    return status_patch(body, now, phase, [(phase, reason)], conditions, extra)


async def _own_record(deps: Deps, body: dict[str, Any]) -> Record | None:
    """This resource's read-model row (None if the order id belongs to another resource)."""
    record = await deps.readmodel.get(body["metadata"]["name"])
    return record if record is not None and record.uid == body["metadata"]["uid"] else None


async def _end(
    deps: Deps,
    body: dict[str, Any],
    record: Record | None,
    phase: Phase,
    reason: Reason | str,
    message: str,
    payment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    now = deps.clock()
    failed = phase is not Phase.SETTLED
    if failed:
        patch = _ending_patch(body, now, phase, str(reason), message, payment or {})
        if record is not None:
            # Before the write: once the checkout is seen ended, its page is watched.
            await watch_unsettled(deps, record)
    else:
        patch = settlement_patch(body, now, payment or {})
    updated = await write_status(deps, body, patch)
    order_id = body["metadata"]["name"]
    if record is not None:
        journaled = await deps.readmodel.record_phase(
            order_id,
            [(phase, str(reason))],
            payment=payment,
            failure=(str(reason), message) if failed else None,
        )
        await _publish_final(deps, journaled, phase)
    await _announce_transitions(deps, updated, [(phase, str(reason))], message)
    return updated


async def settle(
    deps: Deps, body: dict[str, Any], paid: TransactionStatus, record: Record
) -> dict[str, Any]:
    """AwaitingPayment -> Settled by a payment verified against Midtrans' status API.

    The journal holds the verified payment before the status write, so the
    ``settled`` event (stock sold) is only ever published for money Midtrans confirmed.
    """
    await _journal_paid(deps, record, paid)
    payment = dict((body.get("status") or {}).get("payment") or {})
    payment.update(payment_fields(paid))
    payment.setdefault("paidAt", timestamp(deps.clock()))
    return await _end(deps, body, record, Phase.SETTLED, "Paid", SETTLED_MESSAGE, payment)


async def _journal_paid(deps: Deps, record: Record, paid: TransactionStatus) -> None:
    """Record the verified payment the checkout is sold by (before anything announces it)."""
    await deps.readmodel.mark_paid(record.order_id, *_paid(paid))


def _paid(paid: TransactionStatus) -> tuple[str, int]:
    """The journal's record of a verified payment: its Midtrans order and amount."""
    assert paid.is_paid and paid.amount_idr is not None
    return paid.order_id, paid.amount_idr


async def confirmed_status(deps: Deps, midtrans_order: str) -> TransactionStatus | None:
    """The order's status from Midtrans' status API (the only evidence of a payment)."""
    try:
        return await deps.breaker.call(lambda: deps.midtrans.status(midtrans_order))
    except (MidtransError, CircuitOpen) as exc:
        metrics.MIDTRANS_ERRORS.labels("status", "transient").inc()
        raise Retry(f"Midtrans status: {exc}") from exc


def _verified(record: Record, ts: TransactionStatus, source: str) -> bool:
    """Whether a paid status may settle the checkout; logged and counted if not."""
    problem = payment_problem(ts, record.midtrans_order_id, record.total, record.currency)
    if problem is None:
        return True
    metrics.UNVERIFIED_PAYMENTS.labels(source).inc()
    log.warning("%s: payment not accepted (%s): %s", record.order_id, source, problem)
    return False


async def watch_unsettled(deps: Deps, record: Record, order: str | None = None) -> None:
    """Watch the checkout's payment page until it can no longer be paid, and give back
    whatever arrives (see ``returns``). ``order``: a specific order, to look at now."""
    midtrans_order = order or record.midtrans_order_id
    if midtrans_order is None:
        return
    # Even the journaled paid order: that settlement's status write may have lost to
    # this ending. The returns loop decides by the phase the checkout really ended in.
    now = deps.clock()
    # The Snap page expires ceil(TTL/60) minutes after it was made, at most a minute
    # past expiresAt; payments may be reported later still (settlement of a transfer).
    until = max(record.expires_at or now, now) + deps.settings.late_payment_window
    await deps.returns.watch(record.order_id, midtrans_order, until, now=order is not None)


async def settle_if_verified(deps: Deps, body: dict[str, Any]) -> dict[str, Any] | None:
    """``status.payment`` says paid: settle only if Midtrans confirms it, else correct it."""
    record = await _own_record(deps, body)
    ts = None
    if record is not None and record.midtrans_order_id:
        ts = await confirmed_status(deps, record.midtrans_order_id)
    if ts is not None and ts.is_paid:
        assert record is not None
        if _verified(record, ts, "status"):  # counts the claim when it does not hold
            return await settle(deps, body, ts, record)
    else:
        metrics.UNVERIFIED_PAYMENTS.labels("status").inc()
    status = body.get("status") or {}
    claimed = (status.get("payment") or {}).get("transactionStatus")
    actual = ts.transaction_status if ts is not None else None
    message = (
        f"status.payment said {claimed!r}, Midtrans says {actual or 'no payment yet'}: "
        "not settled, the payment record corrected"
    )
    payment = {
        **(status.get("payment") or {}),
        "transactionStatus": actual,
        "fraudStatus": ts.fraud_status if ts is not None else None,
    }
    updated = await write_status(deps, body, {"payment": payment})
    await deps.kube.event(updated, "Warning", "UnverifiedPayment", message)
    log.warning("%s: %s", _key(body), message)
    return updated


async def _settled_without_journal(deps: Deps, body: dict[str, Any], record: Record) -> None:
    """Phase Settled without a verified payment in the journal: find out, then act.

    Paid (the webhook listener settled it, or a hand edit raced a real payment):
    journal it and announce ``settled``. Not paid:
    the stock must not be sold. The phase can't go back (terminal phases never change),
    so the journal records the checkout as Cancelled, the payment is stopped, the stock
    released, and the resource says why.
    """
    paid = None
    if record.midtrans_order_id:
        paid = await confirmed_status(deps, record.midtrans_order_id)
    if paid is None or not paid.is_paid:
        # Not paid (yet): stop the payment; it returns the status if it turns out paid.
        paid = await _stop_payment(deps, record, Compensation.CANCEL_PAYMENT)
    if paid is not None and _verified(record, paid, "phase"):
        await _adopt_settlement(deps, body, record, paid)
        return
    if paid is None:
        metrics.UNVERIFIED_PAYMENTS.labels("phase").inc()
    message = "phase Settled was written without a payment Midtrans confirms: stock released"
    await watch_unsettled(deps, record)
    await deps.readmodel.record_phase(
        record.order_id,
        [(Phase.CANCELLED, "UnverifiedSettlement")],
        failure=("UnverifiedSettlement", message),
    )
    await _publish_final(deps, record, Phase.CANCELLED)
    # The cache keeps little of an ended checkout: the conditions come from the resource.
    body = await deps.kube.get(body["metadata"]["namespace"], body["metadata"]["name"]) or body
    conditions = with_condition(
        (body.get("status") or {}).get("conditions") or [],
        "PaymentVerified",
        False,
        "UnverifiedSettlement",
        message,
        deps.clock(),
        int(body["metadata"].get("generation", 1)),
    )
    updated = await write_status(deps, body, {"conditions": conditions})
    await deps.kube.event(updated, "Warning", "UnverifiedSettlement", message)
    log.error("%s: %s", _key(body), message)


async def _adopt_settlement(
    deps: Deps, body: dict[str, Any], record: Record, paid: TransactionStatus
) -> None:
    """Another writer settled the resource (the webhook listener, once Midtrans' status
    API confirmed the payment to it) and Midtrans confirms the payment to us too: the
    journal takes it, the goods are sold, the ending gets its Event. No status write:
    the listener's was the checkout's last."""
    if record.finished_at is None:
        await deps.readmodel.record_phase(
            record.order_id,
            [(Phase.SETTLED, SETTLED_REASON)],
            payment=payment_fields(paid),
            paid=_paid(paid),
        )
    else:
        await _journal_paid(deps, record, paid)
    await _publish_final(deps, record, Phase.SETTLED, sold_by=paid.order_id)
    await _announce_transitions(deps, body, [(Phase.SETTLED, SETTLED_REASON)], SETTLED_MESSAGE)


async def cancel(deps: Deps, body: dict[str, Any]) -> dict[str, Any]:
    reason = Reason.CANCEL_REQUESTED
    message = "cancel requested"
    view = View.of(body)
    if not view.cancel_requested and view.payment is PaymentState.CANCELLED:
        reason, message = Reason.PAYMENT_FAILED, "the payment was cancelled at Midtrans"
    return await fail(deps, body, reason, message)


async def expire(deps: Deps, body: dict[str, Any]) -> dict[str, Any]:
    return await fail(deps, body, Reason.PAYMENT_EXPIRED, "not paid in time")


async def _stop_payment(deps: Deps, record: Record, how: Compensation) -> TransactionStatus | None:
    """Cancel or expire the payment at Midtrans; the status if it turns out paid."""
    if not record.midtrans_order_id or not record.snap_token:
        return None
    order = record.midtrans_order_id
    operation = "cancel" if how is Compensation.CANCEL_PAYMENT else "expire"
    try:
        call = deps.midtrans.cancel if operation == "cancel" else deps.midtrans.expire
        await deps.breaker.call(lambda: call(order))
        return None
    except MidtransClientError as exc:
        # 404: nobody chose a payment method yet; 412: already final. Either way,
        # look at what Midtrans has before deciding.
        if exc.http_status != 404 and exc.status_code != "404":
            metrics.MIDTRANS_ERRORS.labels(operation, "refused").inc()
    except (MidtransError, CircuitOpen) as exc:
        metrics.MIDTRANS_ERRORS.labels(operation, "transient").inc()
        raise Retry(f"Midtrans {operation}: {exc}") from exc
    current = await confirmed_status(deps, order)
    if current is None or current.is_paid:
        return current
    if current.transaction_status in ("capture", "pending"):
        # `expire` does not apply to a capture held for fraud review (challenge):
        # it stays open unless cancelled, and so would the money. Cancel voids it.
        try:
            await deps.breaker.call(lambda: deps.midtrans.cancel(order))
        except MidtransClientError as exc:
            raise Retry(f"Midtrans cancel of {current.transaction_status}: {exc}") from exc
        except (MidtransError, CircuitOpen) as exc:
            metrics.MIDTRANS_ERRORS.labels("cancel", "transient").inc()
            raise Retry(f"Midtrans cancel: {exc}") from exc
    return None


# --- payments reported by the poller or the webhook -------------------------------------


async def apply_payment(
    deps: Deps, body: dict[str, Any], ts: TransactionStatus
) -> dict[str, Any] | None:
    """Act on a payment status read from Midtrans' status API; the updated resource if written.

    Callers pass only what the status API answered: a notification is a hint to ask.
    """
    record = await _own_record(deps, body)
    if record is None:
        return None
    view = View.of(body)
    state = payment_state(ts.transaction_status, ts.fraud_status)
    current = ts.order_id == record.midtrans_order_id
    if view.phase is Phase.AWAITING_PAYMENT and current:
        if state is PaymentState.PAID:
            if record.total is None:  # journal not level yet: never judge money on it
                raise Retry(f"{record.order_id}: no total journaled yet")
            if _verified(record, ts, "poll"):
                return await settle(deps, body, ts, record)
            await watch_unsettled(deps, record, ts.order_id)  # money it can't settle by
            return None
        if state is PaymentState.CANCELLED:
            return await _end(
                deps,
                body,
                record,
                Phase.CANCELLED,
                Reason.PAYMENT_FAILED,
                "the payment was cancelled at Midtrans",
                payment_fields(ts),
            )
        if state is PaymentState.EXPIRED:
            return await _end(
                deps,
                body,
                record,
                Phase.EXPIRED,
                Reason.PAYMENT_EXPIRED,
                "the payment expired at Midtrans",
                payment_fields(ts),
            )
        return None  # pending / denied: the buyer may still pay
    unjournaled = (
        # None; or this very payment, journaled by a settle whose status write lost to
        # the listener's (the notification came before the watch showed Settled).
        record.paid_order_id in (None, ts.order_id)
        and record.finished_at is None
        and (not record.final_event_published)
    )
    if view.phase is Phase.SETTLED and state is PaymentState.PAID and current and unjournaled:
        # Settled by the webhook listener, its ending not journaled yet: this is that
        # payment. (Once the journal has an ending, e.g. a Settled written by hand that
        # Midtrans did not confirm, a payment is money without goods: it goes back, below.)
        if record.total is None:
            raise Retry(f"{record.order_id}: no total journaled yet")
        if _verified(record, ts, "poll"):
            await _adopt_settlement(deps, body, record, ts)
            return None
    sold_by_it = view.phase is Phase.SETTLED and ts.order_id == record.paid_order_id
    if state is not PaymentState.NONE and not sold_by_it:
        # Ended unsettled, or another page of this checkout: whatever was paid goes back.
        await watch_unsettled(deps, record, ts.order_id)
    return None


# --- deletion ------------------------------------------------------------------------


async def release_deleted(deps: Deps, record: Record, last: dict[str, Any] | None = None) -> None:
    """A checkout vanished from the apiserver: never leak the stock it held.

    ``last``: the resource as last seen (the watch's DELETED event, or the cache). If
    it had ended there before the journal recorded it, the archive keeps that ending.
    """
    if record.finished_at is not None:
        await deps.readmodel.mark_deleted(record.order_id)
        return
    ended = View.of(last).phase if last is not None else None
    if last is not None and ended in TERMINAL:
        assert ended is not None
        if ended is not Phase.SETTLED or record.paid_order_id is not None:
            await _level(deps, last, record, ended, deleted=True)
            await _publish_final(deps, record, ended)
            return
    paid = await _stop_payment(deps, record, Compensation.CANCEL_PAYMENT)
    if paid is not None and _verified(record, paid, "deletion"):
        # Paid before the deletion was seen: the goods are sold.
        await deps.readmodel.record_phase(
            record.order_id,
            [(Phase.SETTLED, "PaidBeforeDeletion")],
            payment=payment_fields(paid),
            deleted=True,
            paid=_paid(paid),
        )
        await _publish_final(deps, record, Phase.SETTLED)
        return
    await watch_unsettled(deps, record)  # the page may stay payable: refund what comes
    await deps.readmodel.record_phase(
        record.order_id,
        [(Phase.CANCELLED, Reason.DELETED.value)],
        failure=(Reason.DELETED.value, "the Checkout was deleted before it finished"),
        deleted=True,
    )
    await _publish_final(deps, record, Phase.CANCELLED)
    log.info("released %s: deleted while %s", record.order_id, record.phase)


# --- writing ---------------------------------------------------------------------------


async def write_status(deps: Deps, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """The compare-and-swap; a lost race surfaces as Retry so the checkout is re-read."""
    phase = status.get("phase")
    if phase is not None:
        current = View.of(body).phase
        if current in TERMINAL or not can_reach(current, Phase(phase)):
            raise AssertionError(f"{_key(body)}: {current} -> {phase} is not a saga transition")
    try:
        updated = await deps.kube.patch_status(body, status)
    except Conflict as exc:
        raise Retry(str(exc)) from exc
    if phase is not None:
        metrics.TRANSITIONS.labels(phase).inc()
    return updated


async def _announce_transitions(
    deps: Deps,
    body: dict[str, Any],
    entered: Sequence[tuple[Phase, str]],
    message: str = "",
) -> None:
    """Kubernetes Events for the phase changes (``CHECKOUT_EVENTS``): by default only the
    milestones a person looks for (the payment page, the ending); every one with "all".
    Each Event is a write to the apiserver, so the default keeps a paid checkout at two."""
    if deps.settings.events == "milestones":
        entered = [(phase, reason) for phase, reason in entered if phase in MILESTONES]
    elif deps.settings.events == "none":
        entered = []
    for phase, reason in entered:
        warning = phase in (Phase.REJECTED, Phase.CANCELLED, Phase.EXPIRED)
        text = f"{phase.value}: {message or reason}"
        await deps.kube.event(body, "Warning" if warning else "Normal", reason, text)
