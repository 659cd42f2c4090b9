"""The sandbox's state machine: Snap orders, their transitions, expiry and notifications.

Merchant-side calls (Snap, Core API) and customer-side control calls go through one
:class:`Sandbox`, which works on its transactions in memory behind one asyncio lock (one
process) and writes every changed order to its :class:`~midtrans_sandbox.store.SandboxStore`
before the lock is let go, so a restart forgets nothing, as Midtrans never does: open orders
and undelivered notifications are picked up again, the rest is read back when asked for.
Every transition that changes ``transaction_status`` queues a signed notification.

Expiry is enforced twice: a background task expires orders when their (scaled) Snap expiry
passes and notifies, and every call first expires its order if due, so a payment can never
slip in between the deadline and the next tick of the background task.

A Snap order whose customer never picked a payment method has no Midtrans transaction: its
status stays 404 and nothing is notified when the session expires (the token just stops
working), exactly the case the operator has to resolve with its own TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from midtrans.notification_urls import notification_targets
from midtrans_sandbox.model import Notification, Transaction, amount_text, now_utc
from midtrans_sandbox.notifier import Notifier
from midtrans_sandbox.settings import SandboxSettings
from midtrans_sandbox.store import SandboxStore
from midtrans_sandbox.validation import SnapValidationError, validate_snap

log = logging.getLogger(__name__)

NOT_FOUND_BODY = {"status_code": "404", "status_message": "Transaction doesn't exist."}
CANNOT_MODIFY_BODY = {
    "status_code": "412",
    "status_message": "Merchant cannot modify the status of the transaction",
}
DUPLICATE_ORDER = "transaction_details.order_id has already been taken"
NOTIFICATION_MESSAGE = "midtrans payment notification"
DEFAULT_PAYMENT_TYPE = "bank_transfer"
PAYMENT_TYPE_PATTERN = re.compile(r"^[a-z_]{1,40}$")
FRAUD_RESULTS = ("accept", "challenge")
REFUNDABLE = ("settlement", "partial_refund")
# What ``cancel`` voids: anything not settled yet. A capture (card) is voided, never refunded.
CANCELLABLE = ("pending", "capture")
REFUND_REFUSED_BODY = {
    "status_code": "412",
    "status_message": "Refund is not supported for this payment method",
}
# Longest sleep of the expiry task: bounds the effect of a wall-clock jump.
MAX_EXPIRY_SLEEP = 5.0


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status and JSON body."""

    http_status: int
    body: dict[str, Any]


def _control_error(http_status: int, message: str) -> Reply:
    return Reply(http_status, {"error_messages": [message]})


def _describe(tx: Transaction) -> str:
    if tx.transaction_status is not None:
        return f"a {tx.transaction_status} transaction"
    return "an expired Snap session" if tx.token_expired else "an order without payment method"


class Sandbox:
    """All sandbox state and behaviour; the FastAPI app is a thin layer over it."""

    def __init__(
        self,
        settings: SandboxSettings,
        *,
        notification_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._lock = asyncio.Lock()
        self._store = SandboxStore(settings.state_file)
        # The orders looked at since the start: the store holds them all.
        self._transactions: dict[str, Transaction] = {}
        self._tokens: dict[str, str] = {}
        # Orders changed under the lock, written to the store before it is let go.
        self._changed: dict[str, Transaction] = {}
        # Every open order's Snap expiry, earliest first, each looked at once when due: a
        # scan of every order per create held the lock ~13 ms with 30,000 orders.
        self._deadlines: list[tuple[datetime, int, str]] = []
        self._deadline_seq = itertools.count()
        self._notification_ids = itertools.count(1)
        self._notifier = Notifier(
            settings, transport=notification_transport, on_change=self._delivery_changed
        )
        self._wakeup = asyncio.Event()
        self._expiry_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Pick up what a previous run left open, then start the expiry task."""
        resumed = self._store.resume()
        self._notification_ids = itertools.count(resumed.last_notification_id + 1)
        for tx in resumed.transactions:
            self._cache(tx)
            if _is_open(tx):
                self._push_deadline(tx)
            # In id order, so each receiver still gets an order's first attempts in order.
            for notification in sorted(tx.notifications, key=lambda n: n.id):
                self._notifier.resume(notification)
        if resumed.transactions:
            log.info("resumed %d open or undelivered orders", len(resumed.transactions))
        self._expiry_task = asyncio.get_running_loop().create_task(self._expiry_loop())

    async def aclose(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        await self._notifier.aclose()
        self._store.close()

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """The lock; every order changed meanwhile is stored before it is let go."""
        async with self._lock:
            try:
                yield
            finally:
                self._flush()

    # --- Snap and Core API (the merchant's side) -----------------------------------------

    async def create_snap(
        self,
        body: Any,
        base_url: str,
        *,
        override_notification: str | None = None,
        append_notification: str | None = None,
    ) -> Reply:
        """``override_notification`` / ``append_notification``: the request's
        X-Override-Notification / X-Append-Notification header, if sent."""
        try:
            request = validate_snap(body)
            targets = notification_targets(
                self.settings.notification_url, override_notification, append_notification
            )
        except SnapValidationError as exc:
            return Reply(400, {"error_messages": exc.messages})
        except ValueError as exc:  # a notification header
            return Reply(400, {"error_messages": [str(exc)]})
        async with self._locked():
            if self._find(request.order_id) is not None:
                return Reply(
                    self.settings.duplicate_order_status, {"error_messages": [DUPLICATE_ORDER]}
                )
            now = now_utc()
            start = request.expiry_start or now
            deadline = start + request.expiry_duration * self.settings.time_scale
            token = str(uuid.uuid4())
            tx = Transaction(
                order_id=request.order_id,
                gross_amount=request.gross_amount,
                token=token,
                created_at=now,
                expires_at=deadline,
                item_details=request.item_details,
                customer_details=request.customer_details,
                custom_fields=request.custom_fields,
                notification_urls=targets,
            )
            self._cache(tx)
            self._mark(tx)
            self._push_deadline(tx)
        redirect_url = f"{base_url.rstrip('/')}/snap/v3/redirection/{token}"
        return Reply(201, {"token": token, "redirect_url": redirect_url})

    async def status(self, order_id: str) -> Reply:
        async with self._locked():
            tx = self._get(order_id)
            if tx is None or not tx.chosen:
                return Reply(404, dict(NOT_FOUND_BODY))
            return Reply(200, self._status_json(tx, "Success, transaction is found"))

    async def cancel(self, order_id: str) -> Reply:
        async with self._locked():
            tx = self._get(order_id)
            if tx is None or not tx.chosen:
                return Reply(404, dict(NOT_FOUND_BODY))
            if tx.transaction_status not in CANCELLABLE:
                return Reply(412, dict(CANNOT_MODIFY_BODY))
            self._transition(tx, "cancel")
            return Reply(200, self._status_json(tx, "Success, transaction is canceled"))

    async def expire(self, order_id: str) -> Reply:
        async with self._locked():
            tx = self._get(order_id)
            if tx is None or not tx.chosen:
                return Reply(404, dict(NOT_FOUND_BODY))
            if tx.transaction_status != "pending":
                return Reply(412, dict(CANNOT_MODIFY_BODY))
            self._transition(tx, "expire")
            # status_code "407" is the success answer here (HTTP stays 200: HTTP 407 means
            # "proxy authentication required" and would confuse every HTTP client).
            return Reply(200, self._status_json(tx, "Success, transaction has expired"))

    async def refund(self, order_id: str, body: Any) -> Reply:
        problem = _refund_problem(body)
        if problem:
            return Reply(400, {"status_code": "400", "status_message": problem})
        async with self._locked():
            tx = self._get(order_id)
            if tx is None or not tx.chosen:
                return Reply(404, dict(NOT_FOUND_BODY))
            key = body.get("refund_key")
            for earlier in tx.refunds:
                if key is not None and earlier["refund_key"] == key:
                    # Same refund_key: the same refund, answered again, not refunded twice.
                    return Reply(200, dict(earlier["reply"]))
            if tx.transaction_status not in REFUNDABLE:
                return Reply(412, dict(CANNOT_MODIFY_BODY))
            if tx.refunds_refused:
                return Reply(412, dict(REFUND_REFUSED_BODY))
            remaining = tx.gross_amount - tx.refunded_amount
            amount = body.get("amount", remaining)
            if amount > remaining:
                return Reply(
                    412,
                    {
                        "status_code": "412",
                        "status_message": f"Refund amount exceeds the refundable {remaining}",
                    },
                )
            tx.refunded_amount += amount
            full = tx.refunded_amount == tx.gross_amount
            self._transition(tx, "refund" if full else "partial_refund")
            reply = self._status_json(tx, "Success, refund request is approved")
            reply["refund_amount"] = amount_text(amount)
            reply["refund_key"] = key or str(uuid.uuid4())
            reply["refund_chargeback_id"] = str(len(tx.refunds) + 1)
            tx.refunds.append(
                {
                    "refund_key": reply["refund_key"],
                    "amount": amount,
                    "reason": body.get("reason"),
                    "at": now_utc().isoformat(),
                    "reply": reply,
                }
            )
            return Reply(200, dict(reply))

    # --- control API (the customer's side) -----------------------------------------------

    async def choose(self, order_id: str, payment_type: str | None) -> Reply:
        async with self._locked():
            tx = self._get(order_id)
            if tx is None:
                return _control_error(404, f"unknown order_id {order_id}")
            if tx.chosen:
                return _control_error(409, "a payment method was already chosen")
            if tx.token_expired:
                return _control_error(409, "the Snap session has expired")
            problem = self._choose(tx, payment_type)
            if problem:
                return _control_error(400, problem)
            return Reply(200, tx.to_json())

    async def pay(self, order_id: str, payment_type: str | None, fraud: str | None) -> Reply:
        if fraud is not None and fraud not in FRAUD_RESULTS:
            return _control_error(400, f"fraud must be one of {', '.join(FRAUD_RESULTS)}")
        async with self._locked():
            tx = self._get(order_id)
            if tx is None:
                return _control_error(404, f"unknown order_id {order_id}")
            if not tx.chosen:
                if tx.token_expired:
                    return _control_error(409, "the Snap session has expired")
                problem = self._choose(tx, payment_type)
                if problem:
                    return _control_error(400, problem)
            if not self._is_pending(tx):
                # Midtrans refuses late payment after expiry: so does the sandbox.
                return _control_error(409, f"cannot pay {_describe(tx)}")
            if tx.transaction_status == "capture" and fraud == "challenge":
                return _control_error(409, "the capture is already under review")
            if tx.payment_type == "credit_card":
                self._transition(tx, "capture", fraud_status=fraud or "accept")
            else:
                self._transition(tx, "settlement")
            return Reply(200, tx.to_json())

    async def deny(self, order_id: str) -> Reply:
        async with self._locked():
            tx = self._get(order_id)
            if tx is None:
                return _control_error(404, f"unknown order_id {order_id}")
            if not tx.chosen or not self._is_pending(tx):
                return _control_error(409, f"cannot deny {_describe(tx)}")
            fraud = "deny" if tx.payment_type == "credit_card" else tx.fraud_status
            self._transition(tx, "deny", fraud_status=fraud)
            return Reply(200, tx.to_json())

    async def expire_now(self, order_id: str) -> Reply:
        async with self._locked():
            tx = self._get(order_id)
            if tx is None:
                return _control_error(404, f"unknown order_id {order_id}")
            if not tx.chosen and not tx.token_expired:
                tx.token_expired = True
                self._mark(tx)
            elif tx.transaction_status == "pending":
                self._transition(tx, "expire")
            else:
                return _control_error(409, f"cannot expire {_describe(tx)}")
            return Reply(200, tx.to_json())

    async def force_settle(self, order_id: str) -> Reply:
        """Settle whatever the state: a late settlement after expiry or cancel, as seen live."""
        async with self._locked():
            tx = self._get(order_id)
            if tx is None:
                return _control_error(404, f"unknown order_id {order_id}")
            if tx.transaction_status in ("settlement", "partial_refund", "refund"):
                return _control_error(409, f"cannot force-settle {_describe(tx)}")
            if not tx.chosen:
                # The pending step is skipped on purpose: only the settlement arrives.
                tx.payment_type = DEFAULT_PAYMENT_TYPE
                tx.transaction_time = now_utc()
            self._transition(tx, "settlement", fraud_status="accept")
            return Reply(200, tx.to_json())

    async def force_capture(self, order_id: str, fraud: str | None) -> Reply:
        """A card capture whatever the state: a late card payment after expiry or cancel."""
        if fraud is not None and fraud not in FRAUD_RESULTS:
            return _control_error(400, f"fraud must be one of {', '.join(FRAUD_RESULTS)}")
        async with self._locked():
            tx = self._get(order_id)
            if tx is None:
                return _control_error(404, f"unknown order_id {order_id}")
            if tx.transaction_status in ("capture", "settlement", "partial_refund", "refund"):
                return _control_error(409, f"cannot force-capture {_describe(tx)}")
            tx.payment_type = "credit_card"
            tx.transaction_time = tx.transaction_time or now_utc()
            self._transition(tx, "capture", fraud_status=fraud or "accept")
            return Reply(200, tx.to_json())

    async def refuse_refunds(self, order_id: str, refuse: bool) -> Reply:
        async with self._locked():
            tx = self._get(order_id)
            if tx is None:
                return _control_error(404, f"unknown order_id {order_id}")
            tx.refunds_refused = refuse
            self._mark(tx)
            return Reply(200, tx.to_json())

    async def snapshot(self, order_id: str) -> Reply:
        async with self._locked():
            tx = self._get(order_id)
            if tx is None:
                return _control_error(404, f"unknown order_id {order_id}")
            return Reply(200, tx.to_json())

    async def order_for_token(self, token: str) -> dict[str, Any] | None:
        async with self._locked():
            order_id = self._tokens.get(token) or self._store.order_for_token(token)
            tx = None if order_id is None else self._get(order_id)
            return None if tx is None else tx.to_json()

    # --- internals (callers hold the lock) -----------------------------------------------

    def _get(self, order_id: str) -> Transaction | None:
        tx = self._find(order_id)
        if tx is not None:
            self._expire_if_due(tx, now_utc())
        return tx

    def _find(self, order_id: str) -> Transaction | None:
        tx = self._transactions.get(order_id)
        if tx is None:
            tx = self._store.load(order_id)
            if tx is not None:
                self._cache(tx)
        return tx

    def _cache(self, tx: Transaction) -> None:
        self._transactions[tx.order_id] = tx
        self._tokens[tx.token] = tx.order_id

    def _mark(self, tx: Transaction) -> None:
        self._changed[tx.order_id] = tx

    def _flush(self) -> None:
        if self._changed:
            # Cleared only once written: a failed save is tried again with the next one.
            self._store.save(list(self._changed.values()), is_open=_is_open)
            self._changed.clear()

    def _delivery_changed(self, notification: Notification) -> None:
        # The notifier runs outside the lock, between awaits: store its record at once.
        # A failed save must not stop the delivery (it stays marked for the next save).
        tx = self._transactions.get(notification.order_id)
        if tx is not None:
            self._mark(tx)
            try:
                self._flush()
            except sqlite3.Error:
                log.exception("could not store the delivery of notification %s", notification.id)

    def _push_deadline(self, tx: Transaction) -> None:
        earliest = self._deadlines[0][0] if self._deadlines else None
        heapq.heappush(self._deadlines, (tx.expires_at, next(self._deadline_seq), tx.order_id))
        if earliest is None or tx.expires_at < earliest:
            self._wakeup.set()  # the expiry task must wake earlier now

    @staticmethod
    def _is_pending(tx: Transaction) -> bool:
        status = tx.transaction_status
        return status == "pending" or (status == "capture" and tx.fraud_status == "challenge")

    def _choose(self, tx: Transaction, payment_type: str | None) -> str | None:
        kind = payment_type or DEFAULT_PAYMENT_TYPE
        if not PAYMENT_TYPE_PATTERN.fullmatch(kind):
            return f"invalid payment_type {kind!r}"
        tx.payment_type = kind
        tx.transaction_time = now_utc()
        self._transition(tx, "pending", fraud_status="accept")
        return None

    def _transition(self, tx: Transaction, status: str, *, fraud_status: str | None = None) -> None:
        self._mark(tx)
        tx.transaction_status = status
        if fraud_status is not None:
            tx.fraud_status = fraud_status
        if status == "settlement":
            tx.settlement_time = now_utc()
        log.info("order %s -> %s", tx.order_id, status)
        payload = self._status_json(tx, NOTIFICATION_MESSAGE)
        # One notification per target URL, each delivered and retried on its own.
        for url in tx.notification_urls or (None,):
            notification = Notification(
                id=next(self._notification_ids),
                order_id=tx.order_id,
                payload=payload,
                created_at=now_utc(),
                url=url,
            )
            tx.notifications.append(notification)
            self._notifier.submit(notification)

    def _status_json(self, tx: Transaction, message: str) -> dict[str, str]:
        return tx.status_json(
            merchant_id=self.settings.merchant_id,
            server_key=self.settings.server_key,
            message=message,
        )

    def _expire_if_due(self, tx: Transaction, now: datetime) -> None:
        if now < tx.expires_at:
            return
        if not tx.chosen and not tx.token_expired:
            tx.token_expired = True
            self._mark(tx)
        elif tx.transaction_status == "pending":
            self._transition(tx, "expire")

    async def _expiry_loop(self) -> None:
        while True:
            async with self._locked():
                # Cleared under the lock: a create that lands after this sets it again.
                self._wakeup.clear()
                now = now_utc()
                while self._deadlines and self._deadlines[0][0] <= now:
                    _, _, order_id = heapq.heappop(self._deadlines)
                    # Past its deadline an order is expired or done: one look is all.
                    self._expire_if_due(self._transactions[order_id], now)
                deadline = self._deadlines[0][0] if self._deadlines else None
            delay = MAX_EXPIRY_SLEEP
            if deadline is not None:
                delay = min(delay, max(0.0, (deadline - now).total_seconds()))
            # Not asyncio.wait_for: on 3.11 it drops a cancel that lands as the wake-up
            # comes, and aclose() then waited for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()


def _is_open(tx: Transaction) -> bool:
    """Whether the order still waits for its deadline: a Snap session not yet used, or a
    pending payment (a challenged capture does not expire)."""
    if tx.token_expired:
        return False
    return tx.transaction_status in (None, "pending")


def _refund_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    amount = body.get("amount")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
        return "amount must be an integer"
    if amount is not None and amount <= 0:
        return "amount must be greater than 0"
    key = body.get("refund_key")
    if key is not None and (not isinstance(key, str) or not key or len(key) > 100):
        return "refund_key must be a non-empty string of at most 100 characters"
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        return "reason must be a string"
    return None
