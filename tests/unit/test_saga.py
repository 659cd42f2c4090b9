"""The saga as data: transitions, failures, payments, pricing, status and planning."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from checkout_operator import saga
from checkout_operator.saga import (
    FAILURES,
    FINAL_EVENT,
    HISTORY_LIMIT,
    TERMINAL,
    Action,
    Amounts,
    Compensation,
    Line,
    PaymentState,
    Phase,
    Plan,
    Reason,
    View,
    Voucher,
    can_reach,
    can_transition,
    parse_timestamp,
    payment_deadline,
    payment_items,
    payment_state,
    plan,
    price,
    spec_problem,
    supersedes,
    timestamp,
    with_condition,
    with_history,
)
from midtrans.models import TransactionStatus
from product_service.domain import OUTSTANDING, ReservationStatus, StockEffect, decide
from product_service.domain import Outcome as ProductOutcome
from saga_kit.events import EventType

NOW = dt.datetime(2025, 1, 15, 12, 0, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


# --- the saga along random paths -------------------------------------------------------
#
# A checkout is driven by ``plan()`` as the operator drives it (actions.reconcile), while
# the world does what it may in between: the clock moves, the buyer cancels or pays,
# Midtrans reports late, the Product service hears events late, twice or out of order,
# and a person with ``checkouts/status`` moves the phase forward (the CRD allows it) or
# the expiry later. Each step's effect follows actions.py (start, offer, fail, settle);
# phases come from FAILURES and FINAL_EVENT, the product side is
# product_service.domain.decide.

# Refused before Reserve is called (voucher, user), and refused by Reserve itself.
START_REFUSALS = (Reason.INVALID_VOUCHER, Reason.UNAUTHORIZED)
RESERVE_REFUSALS = (
    Reason.PRODUCT_NOT_FOUND,
    Reason.PRICE_MISMATCH,
    Reason.INVALID_REQUEST,
    Reason.DUPLICATE_ORDER_ID,
)
# "ok" weighs most: the paths worth walking mostly get past the start.
START_OUTCOMES = (
    *("ok",) * 12,
    "infra_error",
    *("crash_after_reserve",) * 3,
    *("write_lost",) * 2,  # terms and page journaled, the status write lost a race
    "setup_fails",
    *START_REFUSALS,
    *RESERVE_REFUSALS,
)
WORLD = (
    "tick",
    "cancel",
    "choose",
    "pay",
    "pay",
    "deny",
    "midtrans_expires",
    "notify",
    "deliver",
    "nudge",  # status.phase: AwaitingPayment written by hand ahead of the operator
    "postpone",  # status.expiresAt moved a year later by hand
)
HAND = "ByHand"  # the reason of a phase change a person wrote
PAID_AT_MIDTRANS = "settlement"


@dataclass
class ProductSide:
    """The Product service's stock and its reservation for the checkout's transaction id."""

    quantity: int
    available: int
    reservation: ReservationStatus | None = None
    sold: int = 0
    released: int = 0

    def reserve(self) -> bool:
        """Reserve is idempotent per transaction id: a retry finds the reservation held."""
        if self.reservation is None:
            if self.quantity > self.available:
                return False
            self.available -= self.quantity
            self.reservation = ReservationStatus.RESERVED
        return True

    def hear(self, event: EventType) -> None:
        decision = decide(event, self.reservation)
        if decision.outcome is not ProductOutcome.APPLIED:
            return
        self.reservation = decision.to_status
        if decision.effect is StockEffect.FINALIZE:
            self.sold += self.quantity
        elif decision.effect is StockEffect.RELEASE:
            self.released += self.quantity
            self.available += self.quantity


@dataclass
class Run:
    product: ProductSide
    phase: Phase = Phase.PENDING
    history: list[dict[str, Any]] = field(default_factory=list)
    cancel_requested: bool = False
    expires_at: dt.datetime | None = None  # status.expiresAt
    offered: bool = False  # status.payment shows the page
    deadline: dt.datetime | None = None  # the journal's, recorded with the terms
    reported: str | None = None  # status.payment.transactionStatus, as last heard
    midtrans: str | None = None  # what Midtrans' status API answers now
    reserve_attempted: bool = False
    committed_published: bool = False
    final_published: bool = False
    outbox: list[EventType] = field(default_factory=list)  # published, not yet heard
    now: dt.datetime = NOW
    deleted: bool = False

    def body(self) -> dict[str, Any]:
        status: dict[str, Any] = {"phase": self.phase.value, "history": self.history}
        if self.expires_at is not None:
            status["expiresAt"] = timestamp(self.expires_at)
        payment: dict[str, Any] = {}
        if self.offered:
            payment.update(snapToken="t", redirectUrl="https://pay/t", midtransOrderId="o-1")
        if self.reported is not None:
            payment.update(transactionStatus=self.reported, fraudStatus="accept")
        if payment:
            status["payment"] = payment
        return {"spec": {"cancelRequested": self.cancel_requested}, "status": status}

    @property
    def path(self) -> list[Phase]:
        return [Phase.PENDING, *(Phase(h["phase"]) for h in self.history)]

    def enter(self, *phases: Phase) -> None:
        assert self.phase not in TERMINAL, f"{self.phase} left for {phases}"
        self.history = with_history(self.history, [(p, "x") for p in phases], self.now)
        self.phase = phases[-1]

    def publish(self, event: EventType) -> None:
        self.outbox.append(event)

    def end(self, reason: Reason) -> None:
        """actions.fail: stop the payment the failure says to, settle if it was paid."""
        outcome = FAILURES[reason]
        if outcome.compensation in (Compensation.CANCEL_PAYMENT, Compensation.EXPIRE_PAYMENT):
            if self.midtrans == PAID_AT_MIDTRANS:
                return self.finish(Phase.SETTLED)
            if self.midtrans in ("pending", "deny"):
                stopped = outcome.compensation is Compensation.EXPIRE_PAYMENT
                self.midtrans = "expire" if stopped else "cancel"
        self.finish(outcome.phase)

    def finish(self, phase: Phase) -> None:
        self.enter(phase)
        self.publish_final()

    def publish_final(self) -> None:
        if self.reserve_attempted and not self.final_published:
            self.publish(EventType(FINAL_EVENT[self.phase]))
            self.final_published = True

    def start(self, outcome: str) -> None:
        if outcome == "infra_error":
            return  # Retry: nothing written
        if self.cancel_requested:
            return self.end(Reason.CANCEL_REQUESTED)
        if outcome in START_REFUSALS:
            return self.end(Reason(outcome))
        self.reserve_attempted = True
        if outcome in RESERVE_REFUSALS and self.product.reservation is None:
            if outcome == Reason.DUPLICATE_ORDER_ID:
                self.reserve_attempted = False  # someone else's reservation under the id
            return self.end(Reason(outcome))
        if not self.product.reserve():
            return self.end(Reason.INSUFFICIENT_STOCK)
        if outcome == "crash_after_reserve":
            return  # Reserve's answer lost: started again later
        if outcome == "setup_fails":
            return self.end(Reason.PAYMENT_SETUP_FAILED)
        # record_terms: a deadline journaled by an earlier try stays.
        self.deadline = self.deadline or self.now + dt.timedelta(minutes=15)
        if outcome == "write_lost":
            return  # the status write lost the compare-and-swap: looked at again
        self.enter(Phase.AUTHORIZED, Phase.RESERVED, Phase.AWAITING_PAYMENT)
        self.offer()

    def offer(self) -> None:
        """The journal's page and deadline shown (start's write, or actions.offer)."""
        self.offered = True
        self.expires_at = self.deadline
        self.announce()

    def announce(self) -> None:
        if not self.committed_published:
            self.publish(EventType.COMMITTED)
            self.committed_published = True

    def step(self, start_outcome: str) -> None:
        """One reconciliation, as actions.reconcile takes it."""
        awaiting = self.phase is Phase.AWAITING_PAYMENT
        step = plan(View.of(self.body()), self.now, HOUR, self.deadline if awaiting else None)
        if self.phase in TERMINAL:
            assert step.action in (Action.FINISH, Action.DELETE), (self.phase, step)
        match step.action:
            case Action.START:
                self.start(start_outcome)
            case Action.OFFER if self.deadline is not None:
                self.offer()  # the resource's history is left as it is here
            case Action.OFFER:  # no page was ever journaled: none is offered
                self.end(Reason.PAYMENT_SETUP_FAILED)
            case Action.SETTLE:
                assert self.midtrans == PAID_AT_MIDTRANS  # settle_if_verified asks Midtrans
                self.finish(Phase.SETTLED)
            case Action.CANCEL:
                cancelled = self.reported == "cancel" and not self.cancel_requested
                self.end(Reason.PAYMENT_FAILED if cancelled else Reason.CANCEL_REQUESTED)
            case Action.EXPIRE:
                self.end(Reason.PAYMENT_EXPIRED)
            case Action.WAIT:
                self.announce()
            case Action.FINISH | Action.DELETE:
                self.publish_final()
                self.deleted = step.action is Action.DELETE

    def world(self, event: str, data: st.DataObject) -> None:
        # Only a page the buyer was shown can be paid.
        payable = self.phase is Phase.AWAITING_PAYMENT and self.offered
        match event:
            case "tick":
                self.now += dt.timedelta(seconds=data.draw(st.integers(0, 7200)))
            case "cancel":
                self.cancel_requested = True
            case "choose" if payable and self.midtrans is None:
                self.midtrans = "pending"
            case "pay" if payable and self.midtrans in (None, "pending", "deny"):
                self.midtrans = PAID_AT_MIDTRANS
            case "deny" if self.midtrans == "pending":
                self.midtrans = "deny"
            case "midtrans_expires" if self.midtrans in ("pending", "deny"):
                self.midtrans = "expire"
            case "notify":
                self.reported = self.midtrans
            case "deliver" if self.outbox:
                i = data.draw(st.integers(0, len(self.outbox) - 1))
                heard = self.outbox[i]
                if not data.draw(st.booleans()):  # heard twice: delivered again later
                    del self.outbox[i]
                self.product.hear(heard)
            case "nudge" if self.phase is Phase.PENDING:
                self.history = with_history(
                    self.history, [(Phase.AWAITING_PAYMENT, HAND)], self.now
                )
                self.phase = Phase.AWAITING_PAYMENT
            case "postpone" if payable and self.expires_at is not None:
                self.expires_at += dt.timedelta(days=365)


@given(data=st.data(), quantity=st.integers(1, 5), stock=st.integers(0, 12))
@settings(max_examples=300)
def test_every_path_ends_once_and_sells_or_releases_exactly_what_was_reserved(
    data: st.DataObject, quantity: int, stock: int
) -> None:
    """Along any path, the checkout changes phase only along allowed transitions, never
    leaves a terminal phase, settles only money Midtrans holds, and once the Product
    service heard its events (late, twice, out of order) the reservation is closed:
    sold exactly if Settled, released exactly otherwise, and nothing is held."""
    run = Run(ProductSide(quantity, stock))
    for _ in range(data.draw(st.integers(0, 40))):
        if data.draw(st.booleans()):
            run.world(data.draw(st.sampled_from(WORLD)), data)
        elif not run.deleted:
            run.step(data.draw(st.sampled_from(START_OUTCOMES)))
    # Quiet down: Midtrans is heard, time passes, the operator's steps go through.
    for _ in range(6):
        run.reported = run.midtrans
        run.now += 2 * HOUR
        if not run.deleted:
            run.step("ok")
    assert run.phase in TERMINAL, run.path
    event(f"ended {run.phase}, reserved: {run.product.reservation is not None}")
    for final in data.draw(st.permutations(run.outbox)):
        run.product.hear(final)

    moves = [(Phase(h["phase"]), h.get("reason")) for h in run.history]
    for (before, _), (after, reason) in itertools.pairwise([(Phase.PENDING, None), *moves]):
        # A person's write may pass phases (the CRD allows any forward move); the
        # operator's go one transition at a time.
        allowed = can_reach if reason == HAND else can_transition
        assert allowed(before, after), run.path
    assert (run.phase is Phase.SETTLED) is (run.midtrans == PAID_AT_MIDTRANS), run.path
    product = run.product
    assert product.reservation not in OUTSTANDING, (run.path, product)
    if product.reservation is None:
        assert product.sold == product.released == 0
    else:
        assert run.reserve_attempted
        assert product.sold == (quantity if run.phase is Phase.SETTLED else 0), run.path
        assert product.released == (0 if run.phase is Phase.SETTLED else quantity), run.path
    assert product.available == stock - product.sold


@given(
    phase=st.sampled_from(sorted(TERMINAL)),
    cancel=st.booleans(),
    payment=st.sampled_from(PaymentState),
    expires=st.none() | st.integers(-10_000, 10_000),
    finished=st.none() | st.integers(-10_000, 10_000),
    ttl=st.none() | st.integers(0, 10_000),
)
def test_a_terminal_phase_plans_only_to_finish_or_delete(
    phase: Phase,
    cancel: bool,
    payment: PaymentState,
    expires: int | None,
    finished: int | None,
    ttl: int | None,
) -> None:
    """Whatever else a finished checkout shows (a cancel request, money, an expiry past),
    the only steps left are announcing its end and deleting it after the TTL."""

    def at(seconds: int | None) -> dt.datetime | None:
        return None if seconds is None else NOW + dt.timedelta(seconds=seconds)

    view = View(phase, cancel, at(expires), payment, at(finished))
    step = plan(view, NOW, None if ttl is None else dt.timedelta(seconds=ttl))
    assert step.action in (Action.FINISH, Action.DELETE)
    deletable = ttl is not None and finished is not None and finished + ttl <= 0
    assert (step.action is Action.DELETE) is deletable


@pytest.mark.parametrize("phase", sorted(TERMINAL))
@pytest.mark.parametrize("held", list(OUTSTANDING))
def test_every_ending_closes_the_reservation_it_may_hold(
    phase: Phase, held: ReservationStatus
) -> None:
    """Whatever a checkout ends in, its final event, applied by the Product service to
    a reservation still held (reserved or committed), closes it: sold only if Settled,
    released otherwise (a start retried after Reserve may end Rejected, too)."""
    decision = decide(EventType(FINAL_EVENT[phase]), held)
    assert decision.outcome is ProductOutcome.APPLIED
    assert decision.to_status not in OUTSTANDING
    sold = StockEffect.FINALIZE if phase is Phase.SETTLED else StockEffect.RELEASE
    assert decision.effect is sold


# --- payment states --------------------------------------------------------------------

MIDTRANS_STATUSES: list[tuple[str | None, str | None, PaymentState]] = [
    ("settlement", None, PaymentState.PAID),
    ("settlement", "accept", PaymentState.PAID),
    ("capture", "accept", PaymentState.PAID),
    ("capture", "challenge", PaymentState.PENDING),
    ("pending", None, PaymentState.PENDING),
    ("pending", "accept", PaymentState.PENDING),
    ("deny", None, PaymentState.DENIED),
    ("deny", "deny", PaymentState.DENIED),
    ("failure", None, PaymentState.DENIED),
    ("cancel", None, PaymentState.CANCELLED),
    ("cancel", "accept", PaymentState.CANCELLED),
    ("expire", None, PaymentState.EXPIRED),
    ("refund", "accept", PaymentState.REFUNDED),
    ("partial_refund", "accept", PaymentState.REFUNDED),
    ("chargeback", "accept", PaymentState.REFUNDED),
    ("partial_chargeback", "accept", PaymentState.REFUNDED),
    ("", None, PaymentState.NONE),
    (None, None, PaymentState.NONE),
    (None, "accept", PaymentState.NONE),
]


@pytest.mark.parametrize(("transaction", "fraud", "expected"), MIDTRANS_STATUSES)
def test_payment_state(transaction: str | None, fraud: str | None, expected: PaymentState) -> None:
    assert payment_state(transaction, fraud) is expected


@pytest.mark.parametrize(("transaction", "fraud"), [(t, f) for t, f, _ in MIDTRANS_STATUSES if t])
def test_payment_state_agrees_with_the_midtrans_client(transaction: str, fraud: str | None) -> None:
    """The operator acts on both readings: they must never disagree about money."""
    state = payment_state(transaction, fraud)
    ts = TransactionStatus(order_id="o-1", transaction_status=transaction, fraud_status=fraud)
    assert (state is PaymentState.PAID) is ts.is_paid
    assert (state is PaymentState.REFUNDED) is ts.is_refund
    assert (state is PaymentState.PENDING) is ts.is_pending
    failed = {PaymentState.DENIED, PaymentState.CANCELLED, PaymentState.EXPIRED}
    assert (state in failed) is ts.is_failed


FINAL = {PaymentState.PAID, PaymentState.CANCELLED, PaymentState.EXPIRED}


def test_an_older_pending_never_overwrites_a_final_status() -> None:
    for final in FINAL:
        assert not supersedes(PaymentState.PENDING, final)
        assert not supersedes(PaymentState.DENIED, final)
        assert not supersedes(PaymentState.NONE, final)


def test_pending_and_denied_alternate_while_the_buyer_retries() -> None:
    assert supersedes(PaymentState.DENIED, PaymentState.PENDING)
    assert supersedes(PaymentState.PENDING, PaymentState.DENIED)


def test_forward_moves_supersede() -> None:
    assert supersedes(PaymentState.PENDING, PaymentState.NONE)
    assert supersedes(PaymentState.DENIED, PaymentState.NONE)
    for final in FINAL:
        assert supersedes(final, PaymentState.NONE)
        assert supersedes(final, PaymentState.PENDING)
        assert supersedes(final, PaymentState.DENIED)
    assert not supersedes(PaymentState.NONE, PaymentState.PENDING)


def test_a_refund_follows_a_payment() -> None:
    assert supersedes(PaymentState.REFUNDED, PaymentState.PAID)
    for state in PaymentState:
        assert not supersedes(state, PaymentState.REFUNDED)


@pytest.mark.parametrize("state", list(PaymentState))
def test_the_same_state_does_not_supersede(state: PaymentState) -> None:
    assert not supersedes(state, state)


def test_no_final_state_is_superseded_but_by_a_refund() -> None:
    for new, old in itertools.product(PaymentState, PaymentState):
        if old in FINAL and supersedes(new, old):
            assert new is PaymentState.REFUNDED, f"{new} replaced final {old}"


def test_any_order_of_notifications_ends_final() -> None:
    """Applying ``supersedes`` to any order of one payment's reports keeps the final one."""
    reports = [PaymentState.PENDING, PaymentState.DENIED, PaymentState.PENDING, PaymentState.PAID]
    for order in itertools.permutations(reports):
        recorded = PaymentState.NONE
        for state in order:
            if supersedes(state, recorded):
                recorded = state
        assert recorded is PaymentState.PAID, order


# --- pricing ---------------------------------------------------------------------------

LINES = [Line("p-1", 10_000, 2, "Kopi"), Line("p-2", 2_500, 3, "Teh")]  # 27_500


def test_price_without_a_voucher() -> None:
    assert price(LINES, 1_000, None) == Amounts(27_500, 1_000, 0, 28_500)
    assert price([], 0, None) == Amounts(0, 0, 0, 0)


@pytest.mark.parametrize(
    ("voucher", "fee", "expected"),
    [
        (Voucher("P10", percent=10), 0, Amounts(27_500, 0, 2_750, 24_750)),
        (Voucher("P10", percent=10), 1_000, Amounts(27_500, 1_000, 2_750, 25_750)),
        # A percentage rounds down to a whole rupiah: 27_500 * 3 // 100.
        (Voucher("P3", percent=3), 0, Amounts(27_500, 0, 825, 26_675)),
        (Voucher("P33", percent=33), 0, Amounts(27_500, 0, 9_075, 18_425)),
        (Voucher("F5K", amount=5_000), 500, Amounts(27_500, 500, 5_000, 23_000)),
        (Voucher("CAP", percent=50, max_discount=3_000), 0, Amounts(27_500, 0, 3_000, 24_500)),
        (Voucher("UNDER", percent=5, max_discount=3_000), 0, Amounts(27_500, 0, 1_375, 26_125)),
        (Voucher("BOTH", percent=10, amount=1_000), 0, Amounts(27_500, 0, 3_750, 23_750)),
        (Voucher("ZERO", max_discount=0, amount=5_000), 0, Amounts(27_500, 0, 0, 27_500)),
        # Never below zero, fee included.
        (Voucher("HUGE", amount=1_000_000), 700, Amounts(27_500, 700, 28_200, 0)),
        (Voucher("ALL", percent=150), 0, Amounts(27_500, 0, 27_500, 0)),
    ],
)
def test_price_with_a_voucher(voucher: Voucher, fee: int, expected: Amounts) -> None:
    assert price(LINES, fee, voucher) == expected


def test_amounts_as_status() -> None:
    assert Amounts(10, 2, 3, 9).as_status() == {
        "subtotal": 10,
        "fees": 2,
        "discount": 3,
        "total": 9,
    }


def items_sum(items: list[dict[str, Any]]) -> int:
    return sum(int(item["price"]) * int(item["quantity"]) for item in items)


def test_payment_items_always_sum_to_the_total() -> None:
    line_sets = [
        [Line("a", 1, 1)],
        [Line("a", 9_999, 7), Line("b", 1, 10_000)],
        LINES,
        [Line("a", 0, 3), Line("b", 333, 3)],
    ]
    vouchers: list[Voucher | None] = [
        None,
        Voucher("a", percent=7),
        Voucher("b", amount=123),
        Voucher("c", percent=33, max_discount=500),
        Voucher("d", amount=10**9),
        Voucher("e", percent=100),
        Voucher("f", percent=1, amount=1),
    ]
    combos = 0
    for lines, fee, voucher in itertools.product(line_sets, [0, 1, 2_500], vouchers):
        amounts = price(lines, fee, voucher)
        assert amounts.total >= 0
        assert amounts.total == amounts.subtotal + amounts.fees - amounts.discount
        items = payment_items(lines, amounts)
        assert items_sum(items) == amounts.total, (lines, fee, voucher)
        assert all(item["quantity"] >= 1 for item in items)
        combos += 1
    assert combos == len(line_sets) * 3 * len(vouchers)


def test_payment_items_carry_the_fee_and_a_negative_discount() -> None:
    amounts = price(LINES, 1_000, Voucher("P10", percent=10))
    items = payment_items(LINES, amounts)
    assert items == [
        {"id": "p-1", "price": 10_000, "quantity": 2, "name": "Kopi"},
        {"id": "p-2", "price": 2_500, "quantity": 3, "name": "Teh"},
        {"id": "fee", "price": 1_000, "quantity": 1, "name": "Service fee"},
        {"id": "discount", "price": -2_750, "quantity": 1, "name": "Voucher"},
    ]


def test_payment_items_leave_out_a_zero_fee_and_discount() -> None:
    items = payment_items(LINES, price(LINES, 0, None))
    assert [item["id"] for item in items] == ["p-1", "p-2"]


def test_payment_item_ids_and_names_fit_midtrans() -> None:
    long_id = "x" * 80
    lines = [Line(long_id, 100, 1, "N" * 70), Line("short", 5, 2)]
    items = payment_items(lines, price(lines, 0, None))
    assert items[0]["id"] == "x" * 50
    assert items[0]["name"] == "N" * 50
    # Without a name, the product id stands in (Midtrans requires a name).
    assert items[1]["name"] == "short"
    assert all(len(item["id"]) <= 50 and len(item["name"]) <= 50 for item in items)


# --- status ----------------------------------------------------------------------------


def test_timestamps_are_utc_seconds_and_round_trip() -> None:
    jakarta = dt.timezone(dt.timedelta(hours=7))
    local = dt.datetime(2025, 1, 15, 19, 0, 0, 999_999, tzinfo=jakarta)
    assert timestamp(local) == "2025-01-15T12:00:00Z"
    assert parse_timestamp("2025-01-15T12:00:00Z") == NOW
    assert parse_timestamp(timestamp(NOW)) == NOW
    assert parse_timestamp(None) is None
    assert parse_timestamp("") is None


def entry(i: int) -> dict[str, Any]:
    return {"phase": "Pending", "at": f"2025-01-01T00:00:{i:02d}Z", "reason": f"r{i}"}


def test_with_history_appends_in_order() -> None:
    history = with_history(
        [entry(0)], [(Phase.AUTHORIZED, "UserAuthorized"), (Phase.RESERVED, "StockReserved")], NOW
    )
    assert history == [
        entry(0),
        {"phase": "Authorized", "at": "2025-01-15T12:00:00Z", "reason": "UserAuthorized"},
        {"phase": "Reserved", "at": "2025-01-15T12:00:00Z", "reason": "StockReserved"},
    ]


def test_with_history_keeps_the_newest_entries_oldest_first() -> None:
    old = [entry(i) for i in range(HISTORY_LIMIT)]
    new = [(Phase.AUTHORIZED, "a"), (Phase.RESERVED, "b"), (Phase.AWAITING_PAYMENT, "c")]
    history = with_history(old, new, NOW)
    assert HISTORY_LIMIT == 20
    assert len(history) == HISTORY_LIMIT
    assert history[:17] == old[3:]
    assert [h["reason"] for h in history[-3:]] == ["a", "b", "c"]
    # More new entries than fit: only the last ones stay.
    many = [(Phase.PENDING, f"n{i}") for i in range(HISTORY_LIMIT + 5)]
    assert [h["reason"] for h in with_history(old, many, NOW)] == [
        f"n{i}" for i in range(5, HISTORY_LIMIT + 5)
    ]


def test_with_history_does_not_change_its_input() -> None:
    old = [entry(0)]
    with_history(old, [(Phase.AUTHORIZED, "a")], NOW)
    assert old == [entry(0)]


EARLIER = "2025-01-01T00:00:00Z"


def condition(type_: str, status: str, at: str = EARLIER) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": "Old",
        "message": "old",
        "lastTransitionTime": at,
        "observedGeneration": 1,
    }


def test_with_condition_adds_a_new_type() -> None:
    result = with_condition([], "Ready", True, "Done", "all good", NOW, 2)
    assert result == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Done",
            "message": "all good",
            "lastTransitionTime": "2025-01-15T12:00:00Z",
            "observedGeneration": 2,
        }
    ]


def test_with_condition_keeps_the_transition_time_when_the_status_stays() -> None:
    result = with_condition([condition("Ready", "True")], "Ready", True, "New", "new", NOW, 3)
    assert result == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "New",
            "message": "new",
            "lastTransitionTime": EARLIER,
            "observedGeneration": 3,
        }
    ]


def test_with_condition_moves_the_transition_time_when_the_status_flips() -> None:
    result = with_condition([condition("Ready", "True")], "Ready", False, "Failed", "x", NOW, 3)
    assert len(result) == 1
    assert result[0]["status"] == "False"
    assert result[0]["lastTransitionTime"] == "2025-01-15T12:00:00Z"
    assert result[0]["reason"] == "Failed"
    # Unknown -> True is a flip as well.
    unknown = with_condition([condition("Ready", "Unknown")], "Ready", True, "R", "m", NOW, 1)
    assert unknown[0]["lastTransitionTime"] == "2025-01-15T12:00:00Z"


def test_with_condition_replaces_one_type_and_keeps_the_others() -> None:
    others = [condition("Authorized", "True"), condition("Ready", "True"), condition("X", "False")]
    result = with_condition(others, "Ready", False, "Failed", "x", NOW, 2)
    assert [c["type"] for c in result] == ["Authorized", "Ready", "X"]
    assert result[0] == others[0]
    assert result[2] == others[2]
    assert result[1]["status"] == "False"
    assert sum(1 for c in result if c["type"] == "Ready") == 1
    # The input is left alone.
    assert others[1]["status"] == "True"


# --- planning --------------------------------------------------------------------------


def body(
    phase: str | None = None,
    *,
    cancel: bool = False,
    expires_at: dt.datetime | None = None,
    transaction: str | None = None,
    fraud: str | None = None,
    finished_at: dt.datetime | None = None,
    page: bool = True,
) -> dict[str, Any]:
    """``page``: status.payment shows the payment page (as the start step writes it)."""
    spec: dict[str, Any] = {"userId": "42", "items": [{"productId": "p", "unitPrice": 1}]}
    if cancel:
        spec["cancelRequested"] = True
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if expires_at is not None:
        status["expiresAt"] = timestamp(expires_at)
    payment: dict[str, Any] = {}
    if page:
        payment.update(snapToken="t", redirectUrl="https://pay/t", midtransOrderId="o-1")
    if transaction is not None:
        payment["transactionStatus"] = transaction
        if fraud is not None:
            payment["fraudStatus"] = fraud
    if payment:
        status["payment"] = payment
    if finished_at is not None:
        status["history"] = [
            {"phase": "AwaitingPayment", "at": timestamp(finished_at - HOUR)},
            {"phase": phase, "at": timestamp(finished_at), "reason": "x"},
        ]
    result: dict[str, Any] = {"metadata": {"name": "o-1"}, "spec": spec}
    if status:
        result["status"] = status
    return result


def test_view_of_reads_the_resource() -> None:
    v = View.of(
        body(
            "AwaitingPayment",
            cancel=True,
            expires_at=NOW + HOUR,
            transaction="capture",
            fraud="accept",
        )
    )
    assert v == View(
        phase=Phase.AWAITING_PAYMENT,
        cancel_requested=True,
        expires_at=NOW + HOUR,
        payment=PaymentState.PAID,
        finished_at=None,
        offered=True,
    )


def test_view_of_an_empty_resource() -> None:
    v = View.of({})
    assert v == View(Phase.PENDING, False, None, PaymentState.NONE, None)
    assert View.of({"status": None, "spec": None}) == v
    assert View.of({"status": {"payment": {"snapToken": "t"}}}).payment is PaymentState.NONE


@pytest.mark.parametrize(
    ("b", "offered"),
    [
        (body("AwaitingPayment", expires_at=NOW), True),
        (body("AwaitingPayment", expires_at=NOW, page=False), False),  # phase written by hand
        (body("AwaitingPayment"), False),  # expiresAt removed
        (body("AwaitingPayment", expires_at=NOW, page=False, transaction="pending"), False),
    ],
)
def test_view_of_a_resource_tells_whether_it_shows_the_payment_page(
    b: dict[str, Any], offered: bool
) -> None:
    assert View.of(b).offered is offered


@pytest.mark.parametrize("missing", ["snapToken", "redirectUrl", "midtransOrderId"])
def test_each_field_of_the_page_counts(missing: str) -> None:
    b = body("AwaitingPayment", expires_at=NOW)
    del b["status"]["payment"][missing]
    assert not View.of(b).offered


def test_view_of_a_finished_resource_reads_when_it_finished() -> None:
    v = View.of(body("Settled", finished_at=NOW))
    assert v.phase is Phase.SETTLED
    assert v.finished_at == NOW
    # Only terminal phases have finished.
    assert View.of(body("AwaitingPayment", finished_at=NOW)).finished_at is None


@pytest.mark.parametrize("b", [{}, {"status": {}}, body(), body("Pending")])
def test_a_new_checkout_starts(b: dict[str, Any]) -> None:
    assert plan(View.of(b), NOW, HOUR) == Plan(Action.START)


@pytest.mark.parametrize("phase", ["Authorized", "Reserved"])
def test_a_checkout_caught_between_phases_starts_again(phase: str) -> None:
    assert plan(View.of(body(phase)), NOW, HOUR).action is Action.START


@pytest.mark.parametrize(("transaction", "fraud"), [("settlement", None), ("capture", "accept")])
def test_money_wins(transaction: str, fraud: str | None) -> None:
    b = body(
        "AwaitingPayment",
        cancel=True,
        expires_at=NOW - HOUR,
        transaction=transaction,
        fraud=fraud,
    )
    assert plan(View.of(b), NOW, HOUR) == Plan(Action.SETTLE)


def test_a_cancel_request_cancels() -> None:
    b = body("AwaitingPayment", cancel=True, expires_at=NOW + HOUR, transaction="pending")
    assert plan(View.of(b), NOW, HOUR).action is Action.CANCEL
    # Even when it is also past its expiry.
    late = body("AwaitingPayment", cancel=True, expires_at=NOW - HOUR)
    assert plan(View.of(late), NOW, HOUR).action is Action.CANCEL


def test_a_payment_cancelled_at_midtrans_cancels() -> None:
    b = body("AwaitingPayment", expires_at=NOW + HOUR, transaction="cancel")
    step = plan(View.of(b), NOW, HOUR)
    assert step.action is Action.CANCEL
    assert step.at is None


@pytest.mark.parametrize(
    "b",
    [
        body("AwaitingPayment", expires_at=NOW - dt.timedelta(seconds=1)),
        body("AwaitingPayment", expires_at=NOW),
        body("AwaitingPayment", expires_at=NOW - HOUR, transaction="pending"),
        body("AwaitingPayment", expires_at=NOW - HOUR, transaction="deny"),
        body("AwaitingPayment", expires_at=NOW + HOUR, transaction="expire"),
        body("AwaitingPayment", transaction="expire"),
    ],
)
def test_expiry(b: dict[str, Any]) -> None:
    assert plan(View.of(b), NOW, HOUR) == Plan(Action.EXPIRE)


@pytest.mark.parametrize(
    ("transaction", "fraud"),
    [(None, None), ("pending", None), ("deny", None), ("failure", None), ("capture", "challenge")],
)
def test_otherwise_wait_until_the_expiry(transaction: str | None, fraud: str | None) -> None:
    expires = NOW + dt.timedelta(minutes=15)
    b = body("AwaitingPayment", expires_at=expires, transaction=transaction, fraud=fraud)
    assert plan(View.of(b), NOW, HOUR) == Plan(Action.WAIT, at=expires)


@pytest.mark.parametrize(
    ("shown", "journaled", "due"),
    [
        (NOW, NOW, NOW),
        (NOW + 365 * 24 * HOUR, NOW, NOW),  # moved later by hand: the journal's
        (NOW - HOUR, NOW, NOW - HOUR),  # moved earlier by hand: the earlier
        (None, NOW, NOW),  # removed by hand
        (NOW, None, NOW),  # a row journaled without a deadline: the view alone
        (None, None, None),
    ],
)
def test_the_payment_deadline_is_the_journals_or_an_earlier_one_shown(
    shown: dt.datetime | None, journaled: dt.datetime | None, due: dt.datetime | None
) -> None:
    assert payment_deadline(shown, journaled) == due


def test_expires_at_moved_later_by_hand_neither_delays_the_expiry_nor_its_wake_up() -> None:
    journaled = NOW + dt.timedelta(minutes=15)
    later = View.of(body("AwaitingPayment", expires_at=NOW + 365 * 24 * HOUR))
    assert plan(later, NOW, HOUR, journaled) == Plan(Action.WAIT, at=journaled)
    assert plan(later, journaled, HOUR, journaled) == Plan(Action.EXPIRE)
    # Moved earlier: then (the page is expired at Midtrans, as at any expiry).
    earlier = View.of(body("AwaitingPayment", expires_at=NOW + dt.timedelta(minutes=5)))
    assert plan(earlier, NOW, HOUR, journaled) == Plan(
        Action.WAIT, at=NOW + dt.timedelta(minutes=5)
    )
    # No deadline journaled (a row from before terms were): the resource's, as before.
    assert plan(later, NOW, HOUR) == Plan(Action.WAIT, at=NOW + 365 * 24 * HOUR)


def test_awaiting_payment_without_its_page_shown_is_offered_from_the_journal() -> None:
    """status.phase AwaitingPayment written by hand ahead of the start step's own write
    (which then loses the compare-and-swap): no link, no expiresAt. The journal's page and
    deadline are written then, and it wakes at that deadline; nothing journaled, the
    offer step decides (it cancels)."""
    journaled = NOW + dt.timedelta(minutes=15)
    by_hand = View.of(body("AwaitingPayment", page=False))
    assert plan(by_hand, NOW, HOUR, journaled) == Plan(Action.OFFER, at=journaled)
    assert plan(by_hand, NOW, HOUR) == Plan(Action.OFFER)
    # Past the journaled deadline it expires, page or not.
    assert plan(by_hand, journaled, HOUR, journaled) == Plan(Action.EXPIRE)
    # Money and a cancel request come first, as ever.
    paid = View.of(body("AwaitingPayment", page=False, transaction="settlement"))
    assert plan(paid, NOW, HOUR, journaled) == Plan(Action.SETTLE)
    cancelled = View.of(body("AwaitingPayment", page=False, cancel=True))
    assert plan(cancelled, NOW, HOUR, journaled) == Plan(Action.CANCEL)
    # The page shown but expiresAt removed: offered again too.
    no_expiry = View.of(body("AwaitingPayment"))
    assert plan(no_expiry, NOW, HOUR, journaled) == Plan(Action.OFFER, at=journaled)


@pytest.mark.parametrize("phase", sorted(TERMINAL))
def test_a_finished_checkout_waits_for_its_ttl(phase: Phase) -> None:
    finished = NOW - dt.timedelta(minutes=10)
    b = body(phase.value, finished_at=finished, cancel=True, transaction="settlement")
    assert plan(View.of(b), NOW, HOUR) == Plan(Action.FINISH, at=finished + HOUR)


@pytest.mark.parametrize("phase", sorted(TERMINAL))
def test_a_finished_checkout_is_deleted_after_its_ttl(phase: Phase) -> None:
    b = body(phase.value, finished_at=NOW - HOUR - dt.timedelta(seconds=1))
    assert plan(View.of(b), NOW, HOUR) == Plan(Action.DELETE)
    assert plan(View.of(body(phase.value, finished_at=NOW - HOUR)), NOW, HOUR) == Plan(
        Action.DELETE
    )


@pytest.mark.parametrize("phase", sorted(TERMINAL))
def test_without_a_ttl_a_finished_checkout_stays(phase: Phase) -> None:
    b = body(phase.value, finished_at=NOW - 1000 * HOUR)
    assert plan(View.of(b), NOW, None) == Plan(Action.FINISH)
    # Nor can it be deleted when it is unknown when it finished.
    assert plan(View.of(body(phase.value)), NOW, HOUR) == Plan(Action.FINISH)


def test_planning_is_pure() -> None:
    b = body("AwaitingPayment", expires_at=NOW + HOUR, transaction="pending")
    v = View.of(b)
    assert plan(v, NOW, HOUR) == plan(v, NOW, HOUR)
    assert plan(v, NOW + 2 * HOUR, HOUR).action is Action.EXPIRE
    assert plan(v, NOW, HOUR).action is Action.WAIT


def _spec(**item: object) -> dict[str, object]:
    line = {"productId": "p-1", "unitPrice": 5_000, "quantity": 1, **item}
    return {"userId": "7f1c2d3e-0000-4000-8000-000000000001", "items": [line]}


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({}, None),
        ({"productId": "p\x001"}, "productId"),
        ({"productId": "x" * 51}, "productId"),
        ({"unitPrice": 0}, "unitPrice"),
        ({"unitPrice": 10**13}, "unitPrice"),
        ({"unitPrice": True}, "unitPrice"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": 10_001}, "quantity"),
    ],
)
def test_a_spec_that_can_never_check_out_is_named(
    item: dict[str, object], problem: str | None
) -> None:
    found = spec_problem(_spec(**item))
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_a_spec_without_items_or_with_an_impossible_user_is_refused() -> None:
    assert spec_problem({"userId": "u-1", "items": []}) is not None
    assert spec_problem({**_spec(), "userId": "a b"}) is not None


def test_a_voucher_covering_the_whole_order_leaves_it_unpayable() -> None:
    lines = [saga.Line("p", 5_000, 2)]
    free = saga.price(lines, 1_000, saga.Voucher("FREE", percent=100, amount=1_000))
    assert free.total == 0
    assert "free orders are not supported" in (saga.unpayable(free) or "")
    one = saga.price(lines, 0, saga.Voucher("ALMOST", amount=9_999))
    assert one.total == 1 and saga.unpayable(one) is None


# --- the payment page: the setup deadline and the pace of new Snap orders ------------

SETUP = dt.timedelta(minutes=5)
SECOND = dt.timedelta(seconds=1)


def test_only_a_failed_call_a_deadline_after_the_first_snap_order_ends_the_setup() -> None:
    assert not saga.payment_setup_over(None, SETUP)  # no Snap order yet: not Midtrans' time
    assert not saga.payment_setup_over(SETUP - SECOND, SETUP)
    assert saga.payment_setup_over(SETUP, SETUP)


def test_new_snap_orders_are_spread_over_the_setup_deadline() -> None:
    """The second at once (one lost answer); then gaps doubling up to half the deadline,
    so 5 orders reach 7/8 of it instead of the seconds the reconciler's backoff takes."""
    gaps = [saga.snap_order_gap(n, 5, SETUP) for n in range(1, 6)]
    assert gaps == [dt.timedelta(0), dt.timedelta(0), SETUP / 8, SETUP / 4, SETUP / 2]
    assert sum(gaps, dt.timedelta(0)) == SETUP * 7 / 8 < SETUP
    assert saga.snap_order_gap(2, 2, SETUP) == dt.timedelta(0)


def test_a_new_snap_order_waits_for_its_time_after_the_latest() -> None:
    first_ever = saga.new_snap_order_wait(1, 5, SETUP, None)
    assert first_ever == dt.timedelta(0)
    assert saga.new_snap_order_wait(2, 5, SETUP, (SECOND, SECOND)) == dt.timedelta(0)
    since = (dt.timedelta(seconds=40), 10 * SECOND)  # first 40 s ago, latest 10 s ago
    assert saga.new_snap_order_wait(3, 5, SETUP, since) == SETUP / 8 - 10 * SECOND
    assert saga.new_snap_order_wait(3, 5, SETUP, (SETUP, SETUP)) == dt.timedelta(0)


def test_the_cap_of_snap_orders_ends_nothing_before_the_deadline() -> None:
    """Reaching the cap waits the deadline out (the last order is asked for again
    meanwhile); only then may no more be made and the checkout ends."""
    since = (dt.timedelta(seconds=100), dt.timedelta(seconds=20))
    assert saga.new_snap_order_wait(6, 5, SETUP, since) == SETUP - dt.timedelta(seconds=100)
    assert saga.new_snap_order_wait(6, 5, SETUP, (SETUP, SECOND)) is None
    assert saga.new_snap_order_wait(1, 0, SETUP, None) is None  # a cap of none: none ever
