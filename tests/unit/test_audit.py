"""The ledger audit's rules, over snapshots built by hand (no server).

Each invariant is a table of cases: a snapshot that agrees passes, and each way the two
sides can disagree is named. The stock rule is also checked against the Product
service's own transition table (a property over random event histories).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midtrans import TransactionStatus
from product_service.domain import Outcome, ReservationStatus, StockEffect, decide
from saga_devenv.audit import (
    CheckoutRow,
    Finding,
    ProductLedger,
    Report,
    Reservation,
    Resource,
    ReturnRow,
    Severity,
    Snapshot,
    audit,
    check_money,
    check_reservations,
    check_resources,
    check_stock,
    orders_of,
    orders_to_ask,
    overdue,
    reservation_agrees,
    resource_problem,
    return_severity,
)
from saga_devenv.audit_sources import AuditSettings, CannotCheck, add_arguments, settings_from
from saga_kit.events import EventType

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
GRACE = dt.timedelta(seconds=60)
LONG_AGO = NOW - dt.timedelta(hours=2)
JUST_NOW = NOW - dt.timedelta(seconds=5)


def row(phase: str = "Settled", **changes: Any) -> CheckoutRow:
    terminal = phase in ("Settled", "Expired", "Cancelled", "Rejected")
    base = CheckoutRow(
        order_id="order-1",
        namespace="shop",
        name="order-1",
        uid="uid-1",
        phase=phase,
        reserve_attempted=True,
        total=20_000,
        currency="IDR",
        midtrans_order_id="order-1",
        paid_order_id="order-1" if phase == "Settled" else None,
        failure_reason=None,
        created_at=LONG_AGO,
        finished_at=LONG_AGO if terminal else None,
        deleted_at=None,
    )
    return replace(base, **changes)


def resource(phase: str | None = "Settled", **changes: Any) -> Resource:
    base = Resource(
        namespace="shop",
        name="order-1",
        uid="uid-1",
        phase=phase,
        failure_reason=None,
        created_at=LONG_AGO,
        ended_at=LONG_AGO,
    )
    return replace(base, **changes)


def paid(
    status: str = "settlement", gross: str = "20000.00", order: str = "order-1", **extra: str
) -> TransactionStatus:
    codes = {"settlement": "200", "capture": "200", "pending": "201", "expire": "407"}
    return TransactionStatus.from_json(
        {
            "order_id": order,
            "transaction_status": status,
            "status_code": codes.get(status, "200"),
            "gross_amount": gross,
            "currency": "IDR",
            **extra,
        }
    )


def watching(
    order: str = "order-1", until: dt.datetime = NOW + dt.timedelta(hours=1), **changes: Any
) -> ReturnRow:
    return replace(ReturnRow(order, "order-1", "watching", until), **changes)


# --- 1. stock ------------------------------------------------------------------------------


def ledger(
    stock: int = 7, reserved: int = 2, total: int | None = None, **sold: int
) -> ProductLedger:
    return ProductLedger("p-1", stock, reserved, stock if total is None else total, sold)


RESERVATIONS = [
    Reservation("held-1", "reserved", {"p-1": 1}),
    Reservation("held-2", "committed", {"p-1": 1}),
    Reservation("sold-1", "settled", {"p-1": 3}),
    Reservation("gone-1", "cancelled", {"p-1": 5}),
    Reservation("gone-2", "expired", {"p-1": 4}),
]
SOLD = {"sold-1": 3}


@pytest.mark.parametrize(
    ("product", "right"),
    [
        (ledger(stock=7, total=8, **SOLD), "stock ledger sum=8"),  # a unit vanished
        (ledger(reserved=3, **SOLD), "open reservations hold 2"),  # products.reserved bumped
        (ledger(stock=1, reserved=2, total=1, **SOLD), "products.reserved=2"),  # stock < reserved
        (ledger(), "settled reservations took 3 (sold-1: 0 vs 3)"),  # sold without a movement
        (ledger(**SOLD, **{"gone-1": 5}), "gone-1: 5 vs 0"),  # a released reservation sold
        (ledger(**{"sold-1": 2}), "sold-1: 2 vs 3"),  # sold less than settled
    ],
)
def test_stock_mismatches_name_the_product_and_both_sides(
    product: ProductLedger, right: str
) -> None:
    findings = check_stock([product], RESERVATIONS)
    assert [f.subject for f in findings] == ["product p-1"]
    assert right in findings[0].right or right in findings[0].left


def test_stock_that_adds_up_passes_open_reservations_held_and_settled_ones_sold() -> None:
    assert check_stock([ledger(**SOLD)], RESERVATIONS) == []


def test_negative_reserved_is_a_mismatch_even_if_the_reservations_agree() -> None:
    findings = check_stock([ledger(reserved=-1)], [Reservation("x", "reserved", {"p-2": 1})])
    assert any("products.reserved=-1" in f.right for f in findings)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 5),  # which reservation
            st.sampled_from(
                [EventType.COMMITTED, EventType.SETTLED, EventType.CANCELLED, EventType.EXPIRED]
            ),
        ),
        max_size=40,
    ),
    st.lists(st.integers(1, 5), min_size=6, max_size=6),
)
def test_stock_kept_by_the_product_domains_transitions_always_passes(
    events: list[tuple[int, EventType]], quantities: list[int]
) -> None:
    """Whatever order the events come in, the Product domain's effects (reserve, release,
    finalize) keep exactly the books the audit expects; a unit off anywhere is seen."""
    stock, reserved, ledger_sum = 100, 0, 100
    statuses: dict[str, ReservationStatus] = {}
    sold: Counter[str] = Counter()
    for i, q in enumerate(quantities):
        statuses[f"t{i}"] = ReservationStatus.RESERVED
        reserved += q
    for which, event in events:
        tx = f"t{which}"
        decision = decide(event, statuses[tx])
        if decision.outcome is not Outcome.APPLIED:
            continue
        assert decision.to_status is not None
        statuses[tx] = decision.to_status
        q = quantities[which]
        if decision.effect is not StockEffect.NONE:
            reserved -= q
        if decision.effect is StockEffect.FINALIZE:
            stock -= q
            ledger_sum -= q
            sold[tx] += q
    reservations = [
        Reservation(tx, status.value, {"p-1": quantities[int(tx[1:])]})
        for tx, status in statuses.items()
    ]
    books = ProductLedger("p-1", stock, reserved, ledger_sum, dict(sold))
    assert check_stock([books], reservations) == []
    assert check_stock([replace(books, reserved=reserved + 1)], reservations) != []
    assert check_stock([replace(books, ledger=ledger_sum - 1)], reservations) != []


# --- 2. each checkout and its reservation ----------------------------------------------------


@pytest.mark.parametrize(
    ("checkout", "status", "agrees"),
    [
        (row("Settled"), "settled", True),
        (row("Settled"), "cancelled", False),  # paid, but the stock came back
        (row("Settled"), None, False),  # sold without a reservation
        (row("Settled"), "committed", False),  # the settled event never arrived
        (row("Settled", finished_at=JUST_NOW), "committed", True),  # ... or is on its way
        (row("Expired"), "expired", True),
        (row("Expired"), "cancelled", True),
        (row("Expired"), None, True),  # never reserved
        (row("Expired"), "settled", False),  # goods gone without money, fresh or not
        (row("Expired", finished_at=JUST_NOW), "settled", False),
        (row("Expired"), "reserved", False),  # stock held by an ended checkout
        (row("Expired", finished_at=JUST_NOW), "reserved", True),
        (row("Cancelled"), "committed", False),
        (row("Rejected"), "cancelled", True),
        (row("Rejected"), "reserved", False),  # a late rejection holding stock
        (row("Rejected", reserve_attempted=False), None, True),
        (row("Rejected", reserve_attempted=False), "reserved", False),  # not ours to hold
        (row("AwaitingPayment"), "committed", True),
        (row("AwaitingPayment"), "reserved", True),
        (row("Pending"), None, True),
        (row("AwaitingPayment"), "cancelled", False),  # released while still payable
        (row("AwaitingPayment"), "settled", False),
    ],
)
def test_a_checkout_agrees_with_its_reservation(
    checkout: CheckoutRow, status: str | None, agrees: bool
) -> None:
    reservation = None if status is None else Reservation("order-1", status, {"p-1": 1})
    assert reservation_agrees(checkout, reservation, NOW, GRACE) is agrees


def test_reservation_mismatches_name_both_sides_and_orphans() -> None:
    findings = check_reservations(
        [row("Expired")],
        [Reservation("order-1", "committed", {}), Reservation("stray", "reserved", {})],
        NOW,
        GRACE,
    )
    assert [f.line() for f in findings] == [
        "MISMATCH reservation checkout shop/order-1: read model: Expired"
        " vs reservation order-1: committed",
        "MISMATCH reservation reservation stray: reservation: reserved vs read model: no checkout",
    ]


@pytest.mark.parametrize(
    ("checkout", "reported"),
    [
        (row("AwaitingPayment", expires_at=NOW + GRACE), False),  # payable still
        (row("AwaitingPayment", expires_at=JUST_NOW), False),  # its expiry may be under way
        (row("AwaitingPayment", expires_at=NOW - GRACE), False),
        # Long past the deadline journaled with its terms, still running: held for nobody
        # (its resource's expiresAt may have been moved, or never shown).
        (row("AwaitingPayment", expires_at=LONG_AGO), True),
        (row("Pending", expires_at=LONG_AGO), True),  # the journal never levelled
        (row("AwaitingPayment", expires_at=None), False),  # no terms journaled
        (row("Expired", expires_at=LONG_AGO), False),  # ended
        (row("Settled", expires_at=LONG_AGO), False),
    ],
)
def test_a_running_checkout_long_past_its_journaled_deadline_is_named(
    checkout: CheckoutRow, reported: bool
) -> None:
    assert overdue(checkout, NOW, GRACE) is reported
    held = {"Expired": "expired", "Settled": "settled"}.get(checkout.phase, "reserved")
    findings = check_reservations([checkout], [Reservation("order-1", held, {})], NOW, GRACE)
    assert [f.subject for f in findings] == (["checkout shop/order-1"] if reported else [])


def test_an_overdue_checkout_names_its_deadline_and_what_it_holds() -> None:
    stuck = row("AwaitingPayment", expires_at=LONG_AGO)
    (finding,) = check_reservations([stuck], [Reservation("order-1", "reserved", {})], NOW, GRACE)
    assert finding.line() == (
        "MISMATCH reservation checkout shop/order-1: read model: AwaitingPayment, payment"
        " deadline 2026-05-01T10:00:00+00:00 passed vs reservation order-1: reserved"
    )
    # One finding for one checkout: a reservation that disagrees as well is that one.
    (finding,) = check_reservations([stuck], [Reservation("order-1", "cancelled", {})], NOW, GRACE)
    assert finding.left == "read model: AwaitingPayment"


# --- 3. each resource and its read-model row -------------------------------------------------


@pytest.mark.parametrize(
    ("res", "checkout", "wrong"),
    [
        (resource("Settled"), row("Settled"), None),
        (resource("AwaitingPayment"), row("AwaitingPayment"), None),
        (resource(None), row("Pending"), None),
        (resource("AwaitingPayment"), row("Pending"), None),  # the read model lags
        (resource("Expired"), row("AwaitingPayment"), "read model: AwaitingPayment"),
        (resource("Expired", ended_at=JUST_NOW), row("AwaitingPayment"), None),
        (resource("Expired", ended_at=None), row("AwaitingPayment"), "AwaitingPayment"),
        (resource("Expired"), row("Cancelled"), "read model: Cancelled"),
        # Settled by hand without a payment: the journal keeps what really happened.
        (resource("Settled"), row("Cancelled", failure_reason="UnverifiedSettlement"), None),
        (resource("Settled"), row("Cancelled", failure_reason="Deleted"), "Cancelled"),
        (resource("AwaitingPayment"), row("Expired"), "read model: Expired"),  # row ahead
        (resource("Settled"), None, "no row"),
        (resource(None, created_at=JUST_NOW), None, None),  # not seen by the operator yet
        (resource("Settled"), row("Settled", uid="uid-0"), "uid uid-0"),
        (
            resource("Rejected", uid="uid-2", failure_reason="DuplicateOrderId"),
            row("Settled"),
            None,  # the order id is another Checkout's
        ),
        (resource("Settled"), row("Settled", deleted_at=LONG_AGO), "deleted at"),
        (resource("AwaitingPayment"), row("Pending", total=None), "no total"),
        (resource("AwaitingPayment"), row("Pending"), None),  # the phase may lag a while
    ],
)
def test_a_resource_agrees_with_its_read_model_row(
    res: Resource, checkout: CheckoutRow | None, wrong: str | None
) -> None:
    problem = resource_problem(res, checkout, NOW, GRACE)
    if wrong is None:
        assert problem is None
    else:
        assert problem is not None and wrong in problem[1], problem
        assert res.uid in problem[0]


@pytest.mark.parametrize(
    ("checkout", "namespaces", "reported"),
    [
        (row("Settled"), None, True),  # its resource is gone, the row does not say so
        (row("Settled"), frozenset({"shop"}), True),
        (row("Settled"), frozenset({"other"}), False),  # not audited
        (row("Settled", deleted_at=LONG_AGO), None, False),
        (row("Pending", created_at=JUST_NOW), None, False),  # its resource came after the list
    ],
)
def test_a_row_whose_resource_is_gone_is_marked_deleted(
    checkout: CheckoutRow, namespaces: frozenset[str] | None, reported: bool
) -> None:
    findings = check_resources([], [checkout], namespaces, NOW, GRACE)
    assert [f.right for f in findings] == (["resource: gone"] if reported else [])


def test_resource_parsed_from_its_body() -> None:
    body = {
        "metadata": {
            "namespace": "shop",
            "name": "order-1",
            "uid": "uid-1",
            "creationTimestamp": "2026-05-01T10:00:00Z",
        },
        "status": {
            "phase": "Expired",
            "failure": {"reason": "PaymentExpired"},
            "history": [
                {"phase": "AwaitingPayment", "at": "2026-05-01T10:00:01Z"},
                {"phase": "Expired", "at": "2026-05-01T10:15:00Z"},
            ],
        },
    }
    parsed = Resource.of(body)
    assert (parsed.phase, parsed.failure_reason) == ("Expired", "PaymentExpired")
    assert parsed.ended_at == dt.datetime(2026, 5, 1, 10, 15, tzinfo=dt.UTC)
    fresh = Resource.of({"metadata": body["metadata"]})
    assert (fresh.phase, fresh.ended_at) == (None, None)


# --- 4. money --------------------------------------------------------------------------------


def test_orders_asked_leave_out_the_page_a_running_checkout_is_being_paid_on() -> None:
    pages = {"order-1": ["order-1", "order-1~2"]}
    returns = [watching("order-1~3")]
    assert orders_of(row("AwaitingPayment"), pages, returns) == {"order-1~2", "order-1~3"}
    assert orders_of(row("Expired"), pages, returns) == {"order-1", "order-1~2", "order-1~3"}
    assert orders_to_ask([row("Expired"), row("Pending", order_id="o2")], pages, returns) == [
        "order-1",
        "order-1~2",
        "order-1~3",
    ]


@pytest.mark.parametrize(
    ("ts", "why"),
    [
        (paid(), None),
        (paid("capture", fraud_status="accept"), None),  # a card payment, accepted
        (paid("refund", refund_amount="20000.00"), "not paid"),  # goods kept, money back
        (paid("capture", fraud_status="challenge"), "not paid"),
        (None, "not paid"),
        (paid(gross="1.00"), "amount"),
    ],
)
def test_a_settled_checkout_keeps_its_money_at_midtrans(
    ts: TransactionStatus | None, why: str | None
) -> None:
    findings = check_money([row("Settled")], {}, [], {"order-1": ts}, NOW, GRACE)
    if why is None:
        assert findings == []
    else:
        assert len(findings) == 1 and why in findings[0].right
        assert findings[0].left == "read model: Settled by it for 20000 IDR"


def test_a_settled_checkout_without_a_verified_payment_is_a_mismatch() -> None:
    findings = check_money([row("Settled", paid_order_id=None)], {}, [], {}, NOW, GRACE)
    assert [f.right for f in findings] == ["no verified payment"]


IN_WINDOW = watching()
WINDOW_OVER = watching(until=NOW - dt.timedelta(minutes=1))


@pytest.mark.parametrize(
    ("ts", "watched", "checkout", "severity"),
    [
        (None, None, row("Expired"), None),  # no payment method was ever chosen
        (paid("expire"), None, row("Expired"), None),
        (paid("deny"), None, row("Expired"), None),
        (paid("refund"), None, row("Expired"), None),  # returned
        (paid("cancel"), None, row("Cancelled"), None),  # voided
        (paid(), IN_WINDOW, row("Expired"), Severity.WARNING),  # being returned
        (paid(), WINDOW_OVER, row("Expired"), Severity.MISMATCH),
        (paid(), replace(IN_WINDOW, state="closed"), row("Expired"), Severity.MISMATCH),
        (paid(), replace(IN_WINDOW, state="returned"), row("Expired"), Severity.MISMATCH),
        (paid(), replace(IN_WINDOW, state="refused"), row("Expired"), Severity.MISMATCH),
        (paid(), None, row("Expired"), Severity.MISMATCH),  # nobody will return it
        (paid(), None, row("Expired", finished_at=JUST_NOW), None),  # the ending in flight
        (paid("pending"), None, row("Cancelled"), Severity.MISMATCH),  # still payable
        (paid("capture", fraud_status="challenge"), IN_WINDOW, row("Rejected"), Severity.WARNING),
        (paid("partial_refund"), None, row("Expired"), Severity.MISMATCH),  # the rest kept
        (paid(order="order-1~2"), None, row("AwaitingPayment"), Severity.MISMATCH),
    ],
)
def test_money_on_an_order_that_bought_nothing_goes_back(
    ts: TransactionStatus | None,
    watched: ReturnRow | None,
    checkout: CheckoutRow,
    severity: Severity | None,
) -> None:
    assert return_severity(checkout, ts, watched, NOW, GRACE) is severity


def test_money_findings_name_the_order_and_the_journal() -> None:
    checkout = row("Settled", paid_order_id="order-1~2", midtrans_order_id="order-1~2")
    pages = {"order-1": ["order-1", "order-1~2"]}
    payments = {"order-1": paid(), "order-1~2": paid(order="order-1~2")}
    returns = [replace(watching(), state="closed")]
    findings = check_money([checkout], pages, returns, payments, NOW, GRACE)
    assert [f.line() for f in findings] == [
        "MISMATCH money checkout shop/order-1 order order-1: read model: Settled, "
        f"payment_returns closed until {returns[0].watch_until.isoformat()}"
        " vs Midtrans: settlement 20000.00 IDR"
    ]


# --- the report ------------------------------------------------------------------------------


WARNING = Finding("money", "checkout a/b order b", "x", "y", Severity.WARNING)
MISMATCH = Finding("stock", "product p", "x", "y")


@pytest.mark.parametrize(
    ("findings", "strict", "code"),
    [
        ([], False, 0),
        ([WARNING], False, 0),
        ([WARNING], True, 1),
        ([MISMATCH], False, 1),
        ([MISMATCH, WARNING], False, 1),
    ],
)
def test_exit_code_is_one_on_any_mismatch_and_warnings_count_only_when_strict(
    findings: list[Finding], strict: bool, code: int
) -> None:
    report = Report(findings, {"products": 1})
    assert report.exit_code(strict) == code
    data = json.loads(json.dumps(report.as_json(strict)))
    assert data["ok"] is (code == 0) and data["exit_code"] == code
    assert len(data["mismatches"]) + len(data["warnings"]) == len(findings)


def test_a_clean_snapshot_passes_and_the_summary_counts_what_was_checked() -> None:
    snapshot = Snapshot(
        now=NOW,
        products=[ProductLedger("p-1", 9, 0, 9, {"order-1": 1})],
        reservations=[Reservation("order-1", "settled", {"p-1": 1})],
        checkouts=[row("Settled")],
        resources=[resource("Settled")],
        pages={"order-1": ["order-1"]},
        returns=[],
        payments={"order-1": paid()},
        namespaces=frozenset({"shop"}),
    )
    report = audit(snapshot, GRACE)
    assert report.exit_code(strict=True) == 0
    assert report.text(strict=False) == (
        "checked 1 products, 1 reservations, 1 checkouts, 1 resources, 1 payments:"
        " 0 mismatches, 0 warnings"
    )


# --- settings --------------------------------------------------------------------------------


def settings(monkeypatch: pytest.MonkeyPatch, *argv: str, **env: str) -> AuditSettings:
    for name in (
        "CHECKOUT_DATABASE_URL",
        "CHECKOUT_DATABASE_URL_FILE",
        "PRODUCT_DATABASE_URL",
        "PRODUCT_DATABASE_URL_FILE",
        "CHECKOUT_DB_SCHEMA",
        "PRODUCT_DB_SCHEMA",
        "CHECKOUT_NAMESPACE",
        "KUBECONFIG",
        "KUBERNETES_SERVICE_HOST",
        "MIDTRANS_SERVER_KEY",
        "MIDTRANS_SERVER_KEY_FILE",
        "MIDTRANS_CORE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"MIDTRANS_SERVER_KEY": "SB-key", **env}.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from(parser.parse_args(list(argv)), None)  # no local system


def test_flags_win_over_the_environment_the_system_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "CHECKOUT_DATABASE_URL": "postgresql://env/db",
        "CHECKOUT_DB_SCHEMA": "env_checkouts",
        "KUBECONFIG": "/env/kubeconfig",
        "MIDTRANS_CORE_URL": "https://api.midtrans.com",
    }
    from_env = settings(monkeypatch, **env)
    assert from_env.readmodel_dsn.value == from_env.products_dsn.value == "postgresql://env/db"
    assert (from_env.readmodel_schema, from_env.products_schema) == ("env_checkouts", "products")
    assert str(from_env.kubeconfig) == "/env/kubeconfig"
    assert from_env.midtrans.core_base_url == "https://api.midtrans.com"
    flags = settings(
        monkeypatch,
        "--database-url=postgresql://flag/db",
        "--products-database-url=postgresql://flag/products",
        "--readmodel-schema=flag_schema",
        "--kubeconfig=/flag/kubeconfig",
        "--midtrans-url=http://127.0.0.1:1",
        **env,
    )
    assert (flags.readmodel_dsn.value, flags.products_dsn.value) == (
        "postgresql://flag/db",
        "postgresql://flag/products",
    )
    assert (flags.readmodel_schema, str(flags.kubeconfig)) == ("flag_schema", "/flag/kubeconfig")
    assert flags.midtrans.core_base_url == "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("argv", "env", "namespaces"),
    [
        ((), {}, ("default",)),  # the local system's operator watches default
        ((), {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, ()),  # in a Pod, like the operator: all
        ((), {"CHECKOUT_NAMESPACE": ""}, ()),
        ((), {"CHECKOUT_NAMESPACE": "shop"}, ("shop",)),
        (("-n", "a", "-n", "b"), {"CHECKOUT_NAMESPACE": "shop"}, ("a", "b")),
        (("-A",), {"CHECKOUT_NAMESPACE": "shop"}, ()),
    ],
)
def test_namespaces_follow_the_operators_setting(
    monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...],
    env: dict[str, str],
    namespaces: tuple[str, ...],
) -> None:
    base = {"CHECKOUT_DATABASE_URL": "postgresql://x/y", "KUBECONFIG": "/k"}
    if "KUBERNETES_SERVICE_HOST" in env:
        del base["KUBECONFIG"]
    assert settings(monkeypatch, *argv, **base, **env).namespaces == namespaces


@pytest.mark.parametrize(
    ("argv", "env", "why"),
    [
        ((), {"KUBECONFIG": "/k"}, "CHECKOUT_DATABASE_URL"),  # and no local system
        ((), {"CHECKOUT_DATABASE_URL": "postgresql://x/y"}, "KUBECONFIG"),
        (
            ("--readmodel-schema=x;drop",),
            {"CHECKOUT_DATABASE_URL": "p://x", "KUBECONFIG": "/k"},
            "schema",
        ),
        (
            ("--midtrans-server-key-file=/nonexistent/key",),
            {"CHECKOUT_DATABASE_URL": "p://x", "KUBECONFIG": "/k"},
            "/nonexistent/key",
        ),
    ],
)
def test_missing_or_bad_settings_are_no_verdict(
    monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], env: dict[str, str], why: str
) -> None:
    with pytest.raises(CannotCheck, match="could not check: settings") as raised:
        settings(monkeypatch, *argv, **env)
    assert why in str(raised.value)


def test_money_on_an_order_never_made_for_the_checkout_is_a_warning_not_a_mismatch() -> None:
    """The operator leaves such money to its maker (another release's checkout of the same
    name on one merchant account): the audit says so, for a person to look at."""
    checkout = row("Settled", paid_order_id="order-1~2", midtrans_order_id="order-1~2")
    pages = {"order-1": ["order-1", "order-1~2"]}
    payments = {"order-1": paid(), "order-1~2": paid(order="order-1~2")}
    returns = [replace(watching(), state="closed")]
    made = frozenset({"order-1~2"})
    (finding,) = check_money([checkout], pages, returns, payments, NOW, GRACE, made)
    assert finding.severity is Severity.WARNING
    assert "no Snap page for" in finding.line()
    # Made for us, it is ours to give back: a mismatch while it is kept.
    made_too = made | {"order-1"}
    (kept,) = check_money([checkout], pages, returns, payments, NOW, GRACE, made_too)
    assert kept.severity is Severity.MISMATCH
