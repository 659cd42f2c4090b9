"""The Midtrans sandbox in-process: validation, transitions, expiry and notifications."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from midtrans_sandbox import SandboxSettings, create_app
from midtrans_sandbox.engine import Sandbox as SandboxEngine
from midtrans_sandbox.model import Attempt, Notification
from midtrans_sandbox.notifier import (
    INTERRUPTED,
    RETRY_INTERVALS_MINUTES,
    Notifier,
    max_retries,
    retry_delay,
)
from midtrans_sandbox.store import SandboxStore
from tests.helpers.midtrans_sandbox import (
    BASE_URL,
    CONNECT_ERROR,
    NOTIFICATION_URL,
    SERVER_KEY,
    Received,
    Receiver,
    eventually,
    running_sandbox,
    settings,
)

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{SERVER_KEY}:".encode()).decode()}
WIB_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
STATUS_FIELDS = {
    "status_code",
    "status_message",
    "transaction_id",
    "order_id",
    "merchant_id",
    "payment_type",
    "transaction_time",
    "transaction_status",
    "fraud_status",
    "gross_amount",
    "currency",
    "signature_key",
    "expiry_time",
}


def snap_body(order_id: str = "order-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transaction_details": {"order_id": order_id, "gross_amount": 30000},
        "item_details": [
            {"id": "p-1", "name": "Kopi", "price": 10000, "quantity": 2},
            {"id": "p-2", "name": "Teh", "price": 12000, "quantity": 1},
            {"id": "promo", "name": "Diskon", "price": -2000, "quantity": 1},
        ],
    }
    body.update(overrides)
    return body


def signature(body: dict[str, Any]) -> str:
    raw = body["order_id"] + body["status_code"] + body["gross_amount"] + SERVER_KEY
    return hashlib.sha512(raw.encode()).hexdigest()


class Sandbox:
    """Test-side handle: HTTP to the sandbox app plus the notification receiver."""

    def __init__(self, http: httpx.AsyncClient, receiver: Receiver) -> None:
        self.http = http
        self.receiver = receiver

    async def create(self, order_id: str = "order-1", **overrides: Any) -> httpx.Response:
        return await self.http.post(
            "/snap/v1/transactions", json=snap_body(order_id, **overrides), headers=AUTH
        )

    async def status(self, order_id: str = "order-1") -> httpx.Response:
        return await self.http.get(f"/v2/{order_id}/status", headers=AUTH)

    async def core(self, order_id: str, action: str, **body: Any) -> httpx.Response:
        return await self.http.post(f"/v2/{order_id}/{action}", json=body, headers=AUTH)

    async def control(self, order_id: str, action: str, **body: Any) -> httpx.Response:
        return await self.http.post(f"/_sandbox/transactions/{order_id}/{action}", json=body)

    async def state(self, order_id: str = "order-1") -> dict[str, Any]:
        response = await self.http.get(f"/_sandbox/transactions/{order_id}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def wait_notifications(self, order_id: str, count: int, within: float = 5.0) -> None:
        async def arrived() -> bool:
            return len(self.receiver.for_order(order_id)) >= count

        await eventually(arrived, within)

    def statuses(self, order_id: str = "order-1") -> list[str]:
        return [r.payload["transaction_status"] for r in self.receiver.for_order(order_id)]


@contextlib.asynccontextmanager
async def open_sandbox(sandbox_settings: SandboxSettings) -> AsyncIterator[Sandbox]:
    receiver = Receiver()
    async with (
        running_sandbox(sandbox_settings, receiver) as transport,
        httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http,
    ):
        yield Sandbox(http, receiver)


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with open_sandbox(settings()) as sandbox:
        yield sandbox


# --- Snap ---------------------------------------------------------------------------------


async def test_create_returns_a_token_and_redirect_url(sb: Sandbox) -> None:
    response = await sb.create()
    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r"[0-9a-f-]{36}", body["token"])
    assert body["redirect_url"] == f"{BASE_URL}/snap/v3/redirection/{body['token']}"
    page = await sb.http.get(f"/snap/v3/redirection/{body['token']}")
    assert page.status_code == 200 and "order-1" in page.text


def _set(body: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    target: Any = body
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is ...:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("transaction_details.order_id", ..., "transaction_details.order_id is required"),
        ("transaction_details.order_id", "", "transaction_details.order_id is required"),
        ("transaction_details.order_id", "o" * 51, "order_id too long"),
        ("transaction_details.order_id", "order 1", "may only contain"),
        ("transaction_details.order_id", "order/1", "may only contain"),
        ("transaction_details.order_id", 12345, "must be a string"),
        ("transaction_details.gross_amount", ..., "gross_amount is required"),
        ("transaction_details.gross_amount", 30000.5, "must be an integer"),
        ("transaction_details.gross_amount", "30000", "must be an integer"),
        ("transaction_details.gross_amount", 0, "greater than 0"),
        ("transaction_details.gross_amount", 30001, "is not equal to the sum of item_details"),
        ("transaction_details", ..., "transaction_details is required"),
        ("item_details", {"id": "x"}, "item_details must be an array"),
        ("item_details.0.name", ..., "item_details[0].name is required"),
        ("item_details.0.name", "n" * 51, "item_details[0].name too long"),
        ("item_details.0.id", "i" * 51, "item_details[0].id must be a string"),
        ("item_details.0.price", 10000.0, "item_details[0].price must be an integer"),
        ("item_details.0.quantity", 0, "item_details[0].quantity must be an integer >= 1"),
        ("item_details.0.quantity", ..., "item_details[0].quantity must be an integer >= 1"),
        ("item_details.1", "not an object", "item_details[1] must be an object"),
        ("expiry", {"unit": "week", "duration": 1}, "expiry.unit"),
        ("expiry", {"unit": "minute", "duration": 0}, "expiry.duration"),
        ("expiry", {"unit": "minute", "duration": 1, "start_time": "tomorrow"}, "start_time"),
        ("customer_details", "ani", "customer_details must be an object"),
        ("custom_field1", "x" * 256, "custom_field1"),
    ],
)
async def test_snap_validation(sb: Sandbox, path: str, value: Any, message: str) -> None:
    body = snap_body()
    _set(body, path, value)
    response = await sb.http.post("/snap/v1/transactions", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    messages = response.json()["error_messages"]
    assert any(message in m for m in messages), messages


async def test_the_item_sum_message_is_midtrans_wording(sb: Sandbox) -> None:
    body = snap_body()
    body["transaction_details"]["gross_amount"] = 29999
    response = await sb.http.post("/snap/v1/transactions", json=body, headers=AUTH)
    assert response.json()["error_messages"] == [
        "transaction_details.gross_amount is not equal to the sum of item_details"
    ]


async def test_all_problems_are_reported_at_once_and_bad_json_is_400(sb: Sandbox) -> None:
    response = await sb.http.post(
        "/snap/v1/transactions",
        json={"transaction_details": {}, "item_details": [{"price": 1, "quantity": 1}]},
        headers=AUTH,
    )
    assert len(response.json()["error_messages"]) == 3  # order_id, gross_amount, name
    garbled = await sb.http.post("/snap/v1/transactions", content=b"{", headers=AUTH)
    assert garbled.status_code == 400 and garbled.json()["error_messages"]


async def test_duplicate_order_id(sb: Sandbox) -> None:
    assert (await sb.create()).status_code == 201
    again = await sb.create()
    assert again.status_code == 409
    assert again.json() == {
        "error_messages": ["transaction_details.order_id has already been taken"]
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + base64.b64encode(b"wrong-key:").decode()},
        {"Authorization": "Bearer " + SERVER_KEY},
        {"Authorization": "Basic !!!"},
    ],
)
async def test_merchant_apis_need_the_server_key(sb: Sandbox, headers: dict[str, str]) -> None:
    for response in (
        await sb.http.post("/snap/v1/transactions", json=snap_body(), headers=headers),
        await sb.http.get("/v2/order-1/status", headers=headers),
        await sb.http.post("/v2/order-1/cancel", headers=headers),
    ):
        assert response.status_code == 401
        assert response.json()["error_messages"]
        assert SERVER_KEY not in response.text
    # The control API plays the customer, who has no server key.
    assert (await sb.http.get("/_sandbox/health")).json() == {"status": "ok"}


# --- status -------------------------------------------------------------------------------


async def test_status_is_404_until_a_payment_method_is_chosen(sb: Sandbox) -> None:
    await sb.create()
    for order_id in ("order-1", "unknown-order"):
        response = await sb.status(order_id)
        assert response.status_code == 404
        assert response.json() == {
            "status_code": "404",
            "status_message": "Transaction doesn't exist.",
        }
    assert (await sb.control("order-1", "choose", payment_type="bank_transfer")).status_code == 200
    assert (await sb.status()).status_code == 200


async def test_status_fields_are_midtrans_strings(sb: Sandbox) -> None:
    await sb.create()
    await sb.control("order-1", "choose", payment_type="bank_transfer")
    body = (await sb.status()).json()
    assert body.keys() >= STATUS_FIELDS
    assert all(isinstance(v, str) for v in body.values())
    assert body["status_code"] == "201" and body["transaction_status"] == "pending"
    assert body["gross_amount"] == "30000.00" and body["currency"] == "IDR"
    assert body["payment_type"] == "bank_transfer" and body["fraud_status"] == "accept"
    assert body["merchant_id"] == "G000000000"
    assert re.fullmatch(r"[0-9a-f-]{36}", body["transaction_id"])
    assert WIB_TIME.fullmatch(body["transaction_time"])
    assert WIB_TIME.fullmatch(body["expiry_time"])
    assert "settlement_time" not in body
    assert body["signature_key"] == signature(body)
    # transaction_time is GMT+7 local time: within a minute of now in Jakarta.
    jakarta_now = datetime.now(timezone(timedelta(hours=7))).replace(tzinfo=None)
    shown = datetime.strptime(body["transaction_time"], "%Y-%m-%d %H:%M:%S")
    assert abs((jakarta_now - shown).total_seconds()) < 60


# --- customer actions ---------------------------------------------------------------------


async def test_bank_transfer_pay_settles_and_notifies(sb: Sandbox) -> None:
    await sb.create()
    await sb.control("order-1", "choose", payment_type="bank_transfer")
    assert (await sb.control("order-1", "pay")).status_code == 200
    body = (await sb.status()).json()
    assert body["transaction_status"] == "settlement" and body["status_code"] == "200"
    assert WIB_TIME.fullmatch(body["settlement_time"])
    await sb.wait_notifications("order-1", 2)
    assert sb.statuses() == ["pending", "settlement"]
    for received in sb.receiver.received:
        assert received.headers["user-agent"] == "Veritrans"
        assert received.payload["signature_key"] == signature(received.payload)
        assert received.payload["status_message"] == "midtrans payment notification"


async def test_pay_without_choosing_picks_bank_transfer(sb: Sandbox) -> None:
    await sb.create()
    assert (await sb.control("order-1", "pay")).json()["transaction_status"] == "settlement"
    await sb.wait_notifications("order-1", 2)
    assert sb.statuses() == ["pending", "settlement"]


async def test_card_capture_accept_and_challenge(sb: Sandbox) -> None:
    await sb.create("order-a")
    await sb.control("order-a", "choose", payment_type="credit_card")
    state = (await sb.control("order-a", "pay")).json()
    assert (state["transaction_status"], state["fraud_status"]) == ("capture", "accept")

    await sb.create("order-c")
    await sb.control("order-c", "choose", payment_type="credit_card")
    state = (await sb.control("order-c", "pay", fraud="challenge")).json()
    assert (state["transaction_status"], state["fraud_status"]) == ("capture", "challenge")
    assert (await sb.control("order-c", "pay", fraud="challenge")).status_code == 409
    state = (await sb.control("order-c", "pay")).json()  # the review accepts it
    assert (state["transaction_status"], state["fraud_status"]) == ("capture", "accept")
    assert (await sb.control("order-c", "pay", fraud="maybe")).status_code == 400


async def test_deny(sb: Sandbox) -> None:
    await sb.create()
    await sb.control("order-1", "choose", payment_type="credit_card")
    assert (await sb.control("order-1", "deny")).status_code == 200
    body = (await sb.status()).json()
    assert (body["transaction_status"], body["status_code"]) == ("deny", "202")
    assert body["fraud_status"] == "deny"
    assert (await sb.control("order-1", "pay")).status_code == 409
    assert (await sb.control("order-1", "deny")).status_code == 409


async def test_choose_twice_or_with_a_bad_type_is_refused(sb: Sandbox) -> None:
    await sb.create()
    assert (await sb.control("order-1", "choose", payment_type="Bank Transfer")).status_code == 400
    assert (await sb.control("order-1", "choose")).status_code == 200
    assert (await sb.control("order-1", "choose")).status_code == 409
    assert (await sb.control("unknown", "choose")).status_code == 404


async def test_expired_transactions_refuse_payment_but_a_late_settlement_can_be_forced(
    sb: Sandbox,
) -> None:
    await sb.create()
    await sb.control("order-1", "choose")
    assert (await sb.control("order-1", "expire")).status_code == 200
    body = (await sb.status()).json()
    assert (body["transaction_status"], body["status_code"]) == ("expire", "407")
    refused = await sb.control("order-1", "pay")
    assert refused.status_code == 409 and "expire" in refused.json()["error_messages"][0]

    assert (await sb.control("order-1", "force-settle")).status_code == 200
    body = (await sb.status()).json()
    assert body["transaction_status"] == "settlement" and "settlement_time" in body
    await sb.wait_notifications("order-1", 3)
    assert sb.statuses() == ["pending", "expire", "settlement"]
    assert (await sb.control("order-1", "force-settle")).status_code == 409


async def test_force_settle_without_a_payment_method_sends_only_the_settlement(
    sb: Sandbox,
) -> None:
    await sb.create()
    await sb.control("order-1", "expire")  # the Snap session dies unused
    assert (await sb.control("order-1", "choose")).status_code == 409
    assert (await sb.status()).status_code == 404
    await sb.control("order-1", "force-settle")
    await sb.wait_notifications("order-1", 1)
    assert sb.statuses() == ["settlement"]


# --- Core API transitions -------------------------------------------------------------------


async def test_cancel_pending_then_412(sb: Sandbox) -> None:
    await sb.create()
    assert (await sb.core("order-1", "cancel")).status_code == 404  # no transaction yet
    await sb.control("order-1", "choose")
    cancelled = await sb.core("order-1", "cancel")
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert (body["status_code"], body["transaction_status"]) == ("200", "cancel")
    assert body["signature_key"] == signature(body)
    again = await sb.core("order-1", "cancel")
    assert again.status_code == 412 and again.json()["status_code"] == "412"
    assert (await sb.control("order-1", "pay")).status_code == 409
    await sb.wait_notifications("order-1", 2)
    assert sb.statuses() == ["pending", "cancel"]


async def test_cancel_a_challenged_capture_but_not_a_settlement(sb: Sandbox) -> None:
    await sb.create("order-c")
    await sb.control("order-c", "choose", payment_type="credit_card")
    await sb.control("order-c", "pay", fraud="challenge")
    assert (await sb.core("order-c", "cancel")).json()["transaction_status"] == "cancel"
    await sb.create("order-s")
    await sb.control("order-s", "pay")
    refused = await sb.core("order-s", "cancel")
    assert refused.status_code == 412 and refused.json()["status_code"] == "412"


async def test_expire_pending_answers_407_and_otherwise_412(sb: Sandbox) -> None:
    await sb.create()
    await sb.control("order-1", "choose")
    expired = await sb.core("order-1", "expire")
    assert expired.status_code == 200
    body = expired.json()
    assert (body["status_code"], body["transaction_status"]) == ("407", "expire")
    assert body["signature_key"] == signature(body)
    assert (await sb.core("order-1", "expire")).json()["status_code"] == "412"
    await sb.create("order-2")
    await sb.control("order-2", "pay")
    assert (await sb.core("order-2", "expire")).status_code == 412


async def test_refunds(sb: Sandbox) -> None:
    await sb.create()
    await sb.control("order-1", "choose")
    pending = await sb.core("order-1", "refund", amount=1000, refund_key="r0")
    assert pending.status_code == 412  # nothing settled yet
    await sb.control("order-1", "pay")

    partial = await sb.core("order-1", "refund", amount=10000, reason="broken", refund_key="r1")
    assert partial.status_code == 200
    body = partial.json()
    assert body["transaction_status"] == "partial_refund" and body["refund_amount"] == "10000.00"
    repeated = await sb.core("order-1", "refund", amount=10000, reason="broken", refund_key="r1")
    assert repeated.json() == body, "the same refund_key must not refund twice"
    too_much = await sb.core("order-1", "refund", amount=20001, refund_key="r2")
    assert too_much.status_code == 412
    rest = await sb.core("order-1", "refund", refund_key="r3")  # no amount: the remainder
    assert rest.json()["transaction_status"] == "refund"
    assert rest.json()["refund_amount"] == "20000.00"
    assert (await sb.core("order-1", "refund", amount=1, refund_key="r4")).status_code == 412
    assert (await sb.core("order-1", "refund", amount="1")).status_code == 400
    assert (await sb.state())["refunded_amount"] == 30000
    await sb.wait_notifications("order-1", 4)
    assert sb.statuses() == ["pending", "settlement", "partial_refund", "refund"]


# --- expiry -----------------------------------------------------------------------------------


async def test_pending_expires_by_the_expiry_object_scaled_and_notifies(sb: Sandbox) -> None:
    # 5 minutes at time scale 0.001 is 0.3 s.
    started = time.monotonic()
    await sb.create(expiry={"unit": "minute", "duration": 5})
    await sb.control("order-1", "choose")
    await sb.wait_notifications("order-1", 2, within=3)
    elapsed = time.monotonic() - started
    assert sb.statuses() == ["pending", "expire"]
    assert 0.3 <= elapsed < 2
    assert (await sb.status()).json()["transaction_status"] == "expire"
    assert (await sb.control("order-1", "pay")).status_code == 409


async def test_an_unchosen_order_expires_silently_and_stays_404(sb: Sandbox) -> None:
    await sb.create(expiry={"unit": "minutes", "duration": 1})

    async def expired() -> bool:
        return bool((await sb.state())["token_expired"])

    await eventually(expired, within=3)
    assert (await sb.status()).status_code == 404
    assert (await sb.control("order-1", "choose")).status_code == 409
    assert (await sb.state())["notifications"] == []


async def test_expiry_counts_from_start_time(sb: Sandbox) -> None:
    # Scale 0.001: a 2-day expiry that started 3 minutes ago (172.8 s scaled) has long passed;
    # one that starts in an hour has not. Both are decided on the first read.
    started = datetime.now(timezone(timedelta(hours=7)))
    past = (started - timedelta(minutes=3)).strftime("%Y-%m-%d %H:%M:%S %z")
    future = (started + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S %z")
    await sb.create("order-past", expiry={"start_time": past, "unit": "day", "duration": 2})
    await sb.create("order-future", expiry={"start_time": future, "unit": "hour", "duration": 1})
    assert (await sb.state("order-past"))["token_expired"] is True
    assert (await sb.control("order-future", "choose")).status_code == 200


async def test_the_expiry_task_looks_only_at_orders_that_are_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each create wakes the expiry task: with every order looked at each time, a create
    held the lock for ~13 ms once 30,000 orders were kept (the benchmark's Snap calls)."""
    from midtrans_sandbox.engine import Sandbox as Engine

    looked: list[str] = []
    expire_if_due = Engine._expire_if_due

    def counting(self: Engine, tx: Any, now: datetime) -> None:
        looked.append(tx.order_id)
        expire_if_due(self, tx, now)

    monkeypatch.setattr(Engine, "_expire_if_due", counting)
    async with open_sandbox(settings(time_scale=0.001)) as sb:
        for n in range(50):  # a day to pay (86 s scaled): never due during the test
            assert (await sb.create(f"later-{n}")).status_code == 201
        soon = await sb.create("soon", expiry={"unit": "minute", "duration": 1})  # 0.06 s
        assert soon.status_code == 201

        async def expired() -> bool:
            return bool((await sb.state("soon"))["token_expired"])

        await eventually(expired, within=5)
        for n in range(50):  # more creates after the expiry: each one wakes the task
            await sb.create(f"after-{n}")
        # A witness: the task has run after those creates once this one has expired.
        await sb.create("witness", expiry={"unit": "minute", "duration": 1})

        async def witnessed() -> bool:
            return "witness" in looked

        await eventually(witnessed, within=5)
    assert not [order for order in looked if order.startswith(("later-", "after-"))]


async def test_default_expiry_is_24_hours_scaled() -> None:
    async with open_sandbox(settings(time_scale=1.0)) as sb:
        await sb.create()
        state = await sb.state()
        created = datetime.fromisoformat(state["created_at"])
        assert datetime.fromisoformat(state["expires_at"]) - created == timedelta(hours=24)


# --- notification delivery --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "attempts"),
    [
        ([500, 500, 500], 2),  # 500 -> 1 retry
        ([404] * 6, 3),  # 404 -> 2 retries
        ([400] * 6, 3),
        ([503] * 6, 5),  # 503 -> 4 retries
        ([502] * 7, 6),  # anything else -> 5 retries
        ([CONNECT_ERROR] * 7, 6),  # no answer at all -> 5 retries
        ([503, 200], 2),  # delivered on the first retry: no more attempts
    ],
)
async def test_retry_counts_follow_the_last_answer(answers: list[int], attempts: int) -> None:
    # Time scale 0.00002: all five retries take about 0.4 s.
    async with open_sandbox(settings(time_scale=0.00002)) as sb:
        sb.receiver.script["order-1"] = list(answers)
        await sb.create()
        await sb.control("order-1", "choose")

        async def settled() -> bool:
            (note,) = (await sb.state())["notifications"]
            return note["state"] in ("delivered", "failed")

        await eventually(settled, within=5)
        (note,) = (await sb.state())["notifications"]
        assert len(note["attempts"]) == attempts
        assert note["state"] == ("delivered" if answers[attempts - 1] == 200 else "failed")
        # Each retry waited at least its scheduled interval.
        times = [r.at for r in sb.receiver.for_order("order-1")]
        for retry, (earlier, later) in enumerate(itertools.pairwise(times), start=1):
            assert later - earlier >= RETRY_INTERVALS_MINUTES[retry - 1] * 60 * 0.00002
        logged = [a["http_status"] for a in note["attempts"]]
        expected = [None if a == CONNECT_ERROR else a for a in answers[:attempts]]
        assert logged == expected


async def test_first_attempts_keep_order_and_retries_interleave() -> None:
    async with open_sandbox(settings(time_scale=0.004)) as sb:
        sb.receiver.script["order-1"] = [503]  # the pending notification fails once
        await sb.create()
        await sb.control("order-1", "choose")
        await sb.control("order-1", "pay")
        await sb.wait_notifications("order-1", 3)
        # pending (503), settlement (200), then the pending retry (2 min scaled = 0.48 s).
        assert sb.statuses() == ["pending", "settlement", "pending"]


async def test_without_a_notification_url_nothing_is_sent() -> None:
    async with open_sandbox(settings(notification_url=None)) as sb:
        await sb.create()
        await sb.control("order-1", "pay")
        notes = (await sb.state())["notifications"]
        assert [n["state"] for n in notes] == ["unsent", "unsent"]
        assert sb.receiver.received == []


async def test_shutdown_cancels_pending_retries_promptly() -> None:
    receiver = Receiver(script={"order-1": [503]})
    started = time.monotonic()
    async with (
        running_sandbox(settings(time_scale=1.0), receiver) as transport,
        httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http,
    ):
        await http.post("/snap/v1/transactions", json=snap_body(), headers=AUTH)
        await http.post("/_sandbox/transactions/order-1/choose")

        async def first_attempt_done() -> bool:
            state = (await http.get("/_sandbox/transactions/order-1")).json()
            return bool(state["notifications"][0]["state"] == "retrying")

        await eventually(first_attempt_done)
    # The retry would come 2 minutes later and the expiry after 24 h: neither may block.
    assert time.monotonic() - started < 2
    await asyncio.sleep(0.05)
    assert len(receiver.received) == 1


def test_retry_policy() -> None:
    assert [max_retries(s) for s in (500, 503, 400, 404, 502, 302, None)] == [1, 4, 2, 2, 5, 5, 5]
    assert [retry_delay(n, 1.0, 0.0) for n in range(1, 6)] == [120, 600, 1800, 5400, 12600]
    assert retry_delay(1, 0.001, 0.1) == pytest.approx(0.132)


def test_settings_from_env() -> None:
    parsed = SandboxSettings.from_env(
        {
            "MIDTRANS_SANDBOX_SERVER_KEY": "SB-secret",
            "MIDTRANS_SANDBOX_NOTIFICATION_URL": "http://127.0.0.1:9/hook",
            "MIDTRANS_SANDBOX_TIME_SCALE": "0.01",
            "MIDTRANS_SANDBOX_PORT": "18999",
        }
    )
    assert parsed.time_scale == 0.01 and parsed.port == 18999 and parsed.host == "127.0.0.1"
    assert parsed.notification_url == "http://127.0.0.1:9/hook"
    assert "SB-secret" not in repr(parsed)
    defaults = SandboxSettings.from_env({"MIDTRANS_SANDBOX_SERVER_KEY": "k"})
    assert (defaults.port, defaults.time_scale, defaults.notification_url) == (18900, 1.0, None)
    with pytest.raises(ValueError, match="SERVER_KEY"):
        SandboxSettings.from_env({})
    with pytest.raises(ValueError, match="time scale"):
        SandboxSettings.from_env(
            {"MIDTRANS_SANDBOX_SERVER_KEY": "k", "MIDTRANS_SANDBOX_TIME_SCALE": "0"}
        )


async def test_a_capture_is_voided_by_cancel_and_never_refunded(sb: Sandbox) -> None:
    await sb.create("order-v")
    await sb.control("order-v", "pay", payment_type="credit_card")
    refused = await sb.core("order-v", "refund", amount=10_000, refund_key="r1")
    assert refused.status_code == 412  # Midtrans: a capture is cancelled, not refunded
    voided = await sb.core("order-v", "cancel")
    assert voided.status_code == 200 and voided.json()["transaction_status"] == "cancel"
    assert (await sb.state("order-v"))["refunded_amount"] == 0


async def test_a_challenged_capture_reports_201_and_cannot_be_expired(sb: Sandbox) -> None:
    await sb.create("order-h")
    await sb.control("order-h", "pay", payment_type="credit_card", fraud="challenge")
    status = (await sb.status("order-h")).json()
    assert (status["transaction_status"], status["fraud_status"]) == ("capture", "challenge")
    assert status["status_code"] == "201"  # not money yet
    assert (await sb.core("order-h", "expire")).status_code == 412
    assert (await sb.core("order-h", "cancel")).json()["transaction_status"] == "cancel"


async def test_refunds_can_be_refused_until_a_person_fixes_it(sb: Sandbox) -> None:
    await sb.create("order-r")
    await sb.control("order-r", "pay")
    assert (await sb.control("order-r", "refuse-refunds", refuse=True)).status_code == 200
    refused = await sb.core("order-r", "refund", refund_key="k")
    assert refused.status_code == 412 and "not supported" in refused.text
    await sb.control("order-r", "refuse-refunds", refuse=False)
    done = await sb.core("order-r", "refund", refund_key="k")
    assert done.status_code == 200 and done.json()["transaction_status"] == "refund"


async def test_force_capture_models_a_late_card_payment(sb: Sandbox) -> None:
    await sb.create("order-l")
    await sb.control("order-l", "expire")  # the Snap session lapses unpaid
    late = await sb.control("order-l", "force-capture", fraud="accept")
    assert late.status_code == 200
    state = late.json()
    assert (state["transaction_status"], state["payment_type"]) == ("capture", "credit_card")
    assert (await sb.control("order-l", "force-capture")).status_code == 409
    assert (await sb.control("order-l", "force-capture", fraud="maybe")).status_code == 400


# --- per-transaction notification URLs (X-Override-Notification / X-Append-Notification) --

OTHER_URL = "http://listener.test/hook"
THIRD_URL = "https://third.test/n"


async def _paid_with_headers(sb: Sandbox, headers: dict[str, str]) -> httpx.Response:
    created = await sb.http.post(
        "/snap/v1/transactions", json=snap_body(), headers={**AUTH, **headers}
    )
    if created.status_code == 201:
        await sb.control("order-1", "pay")
    return created


def _targets(sb: Sandbox) -> list[tuple[str, str]]:
    return sorted((r.url, r.payload["transaction_status"]) for r in sb.receiver.received)


async def test_override_header_sends_each_status_only_to_its_urls(sb: Sandbox) -> None:
    created = await _paid_with_headers(sb, {"X-Override-Notification": f"{OTHER_URL}, {THIRD_URL}"})
    assert created.status_code == 201
    await sb.wait_notifications("order-1", 4)
    assert _targets(sb) == sorted(
        (url, status) for url in (OTHER_URL, THIRD_URL) for status in ("pending", "settlement")
    )
    notes = (await sb.state())["notifications"]
    assert {n["url"] for n in notes} == {OTHER_URL, THIRD_URL}


async def test_append_header_adds_to_the_dashboard_url(sb: Sandbox) -> None:
    await _paid_with_headers(sb, {"X-Append-Notification": OTHER_URL})
    await sb.wait_notifications("order-1", 4)
    assert {url for url, _ in _targets(sb)} == {NOTIFICATION_URL, OTHER_URL}


async def test_override_wins_over_append(sb: Sandbox) -> None:
    await _paid_with_headers(
        sb, {"X-Override-Notification": OTHER_URL, "X-Append-Notification": THIRD_URL}
    )
    await sb.wait_notifications("order-1", 2)
    assert _targets(sb) == [(OTHER_URL, "pending"), (OTHER_URL, "settlement")]
    assert len((await sb.state())["notifications"]) == 2  # nothing else was queued


async def test_override_works_without_a_dashboard_url() -> None:
    async with open_sandbox(settings(notification_url=None)) as sb:
        await _paid_with_headers(sb, {"X-Override-Notification": OTHER_URL})
        await sb.wait_notifications("order-1", 2)
        assert [n["state"] for n in (await sb.state())["notifications"]] == ["delivered"] * 2


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ftp://x.test/n",
        "not a url",
        "http://a.test/1,http://a.test/2,http://a.test/3,http://a.test/4",
        "http://a.test/" + "x" * 300,
    ],
)
async def test_bad_notification_header_is_refused_and_creates_nothing(
    sb: Sandbox, value: str
) -> None:
    created = await _paid_with_headers(sb, {"X-Override-Notification": value})
    assert created.status_code == 400
    assert "X-Override-Notification" in created.json()["error_messages"][0]
    assert (await sb.http.get("/_sandbox/transactions/order-1")).status_code == 404


async def test_closing_right_after_a_create_that_wakes_the_expiry_task_does_not_hang() -> None:
    """The first order wakes the expiry task; a close in the same tick used to lose its
    cancel inside asyncio.wait_for (3.11), and the sandbox never finished stopping."""
    sandbox = SandboxEngine(settings())
    await sandbox.start()
    await asyncio.sleep(0)  # the expiry task waits for its wake-up
    created = await sandbox.create_snap(snap_body(), BASE_URL)
    assert created.http_status == 201
    closing = asyncio.create_task(sandbox.aclose())
    done, _ = await asyncio.wait({closing}, timeout=4)  # the expiry task's sleep is 5 s
    assert closing in done, "the sandbox did not finish closing"
    assert asyncio.all_tasks() == {asyncio.current_task()}


# --- a restart forgets nothing (Midtrans never forgets an order) -------------------------


async def test_a_restarted_sandbox_still_knows_every_order(tmp_path: Any) -> None:
    kept = settings(state_file=str(tmp_path / "sandbox.sqlite3"))
    async with open_sandbox(kept) as sb:
        await sb.create("paid")
        await sb.control("paid", "pay")
        await sb.wait_notifications("paid", 2)
        paid = (await sb.status("paid")).json()
        await sb.create("refunded")
        await sb.control("refunded", "pay")
        assert (await sb.core("refunded", "refund", amount=5000, refund_key="r-1")).is_success
        token = (await sb.create("unpaid")).json()["token"]

        async def all_delivered() -> bool:
            notes = (await sb.state("refunded"))["notifications"]
            return [n["state"] for n in notes] == ["delivered"] * 3

        await eventually(all_delivered)
        before = {order: await sb.state(order) for order in ("paid", "refunded", "unpaid")}
    async with open_sandbox(kept) as sb:
        # The status API answers as before, signature and transaction id included.
        assert (await sb.status("paid")).json() == paid
        for order, state in before.items():
            assert await sb.state(order) == state
        # A reused order_id is still refused, the payment page still opens.
        assert (await sb.create("paid")).status_code == 409
        assert (await sb.http.get(f"/snap/v3/redirection/{token}")).status_code == 200
        # The same refund_key is still the same refund.
        again = await sb.core("refunded", "refund", amount=5000, refund_key="r-1")
        assert again.json()["refund_amount"] == "5000.00"
        assert (await sb.state("refunded"))["refunded_amount"] == 5000
        # The unpaid order can still be paid; notification ids go on, never reused.
        assert (await sb.control("unpaid", "pay")).is_success
        await sb.wait_notifications("unpaid", 2)
        ids = [n["id"] for order in before for n in (await sb.state(order))["notifications"]]
        assert len(ids) == len(set(ids))
    async with open_sandbox(settings()) as sb:  # without a file: a clean slate
        assert (await sb.status("paid")).status_code == 404


async def test_a_pending_payment_whose_deadline_passed_while_stopped_expires_then(
    tmp_path: Any,
) -> None:
    # Time scale 0.05: a one-minute Snap expiry is 3 s, long enough for the first run on
    # a busy machine.
    kept = settings(state_file=str(tmp_path / "sandbox.sqlite3"), time_scale=0.05)
    expiry = {"unit": "minute", "duration": 1}
    async with open_sandbox(kept) as sb:
        await sb.create("pending", expiry=expiry)
        await sb.control("pending", "choose")
        await sb.create("unchosen", expiry=expiry)
        await sb.wait_notifications("pending", 1)
        assert (await sb.status("pending")).json()["transaction_status"] == "pending"
        deadline = datetime.fromisoformat((await sb.state("pending"))["expires_at"])
    await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.2)
    async with open_sandbox(kept) as sb:
        await sb.wait_notifications("pending", 1)
        assert sb.statuses("pending") == ["expire"]
        assert (await sb.status("pending")).json()["transaction_status"] == "expire"
        # A Snap session never used expires silently, as before the restart.
        assert (await sb.state("unchosen"))["token_expired"] is True
        assert sb.receiver.for_order("unchosen") == []


async def test_a_notification_being_retried_is_retried_after_a_restart(tmp_path: Any) -> None:
    # Time scale 0.02: the first retry comes 2 min x 0.02 = 2.4 s after the first attempt.
    kept = settings(state_file=str(tmp_path / "sandbox.sqlite3"), time_scale=0.02)
    async with open_sandbox(kept) as sb:
        sb.receiver.script["order-1"] = [503]
        await sb.create()
        await sb.control("order-1", "choose")

        async def retrying() -> bool:
            return bool((await sb.state())["notifications"][0]["state"] == "retrying")

        await eventually(retrying)
        first = sb.receiver.for_order("order-1")[0].at
    await asyncio.sleep(1.2)
    restarted = time.monotonic()
    async with open_sandbox(kept) as sb:
        await sb.wait_notifications("order-1", 1, within=5)
        # On the schedule counted from the first attempt, not from the restart.
        retried = sb.receiver.for_order("order-1")[0].at
        assert retried - first >= 2.4
        assert retried - restarted < 2.4, "counted from the restart"
        (note,) = (await sb.state())["notifications"]
        assert note["state"] == "delivered"
        assert [a["http_status"] for a in note["attempts"]] == [503, 200]


async def test_a_notification_in_flight_when_the_sandbox_stopped_is_sent_again(
    tmp_path: Any,
) -> None:
    kept = settings(state_file=str(tmp_path / "sandbox.sqlite3"))
    receiver = Receiver()

    async def hang(request: httpx.Request) -> httpx.Response:
        receiver.received.append(Received(time.monotonic(), request.headers, {}, ""))
        await asyncio.Event().wait()  # the receiver never answers
        raise AssertionError("unreachable")

    app = create_app(kept, notification_transport=httpx.MockTransport(hang))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http,
    ):
        await http.post("/snap/v1/transactions", json=snap_body(), headers=AUTH)
        await http.post("/_sandbox/transactions/order-1/pay")

        async def in_flight() -> bool:
            return len(receiver.received) == 1

        await eventually(in_flight)
        # A change meanwhile stores the order with its attempt still in flight.
        refund = await http.post("/v2/order-1/refund", json={"amount": 5000}, headers=AUTH)
        assert refund.status_code == 200, refund.text
    async with open_sandbox(kept) as sb:
        await sb.wait_notifications("order-1", 3)
        assert sb.statuses() == ["pending", "settlement", "partial_refund"]
        notes = (await sb.state())["notifications"]
        assert [n["state"] for n in notes] == ["delivered"] * 3
        attempts = [(a["error"], a["http_status"]) for a in notes[0]["attempts"]]
        assert attempts == [(INTERRUPTED, None), (None, 200)]


async def test_an_interrupted_attempt_does_not_count_against_the_retries() -> None:
    """Interrupted, then a 500 (which allows one retry): the retry still comes."""
    receiver = Receiver()
    notifier = Notifier(settings(time_scale=0.0001), transport=httpx.MockTransport(receiver.handle))
    now = datetime.now(UTC)
    notification = Notification(
        id=1,
        order_id="order-1",
        payload={"order_id": "order-1", "transaction_status": "pending"},
        created_at=now,
        url=NOTIFICATION_URL,
        attempts=[
            Attempt(1, now, error=INTERRUPTED, finished_at=now),
            Attempt(2, now, http_status=500, finished_at=now),
        ],
        state="retrying",
    )
    notifier.resume(notification)

    async def delivered() -> bool:
        return notification.state == "delivered"

    await eventually(delivered, within=5)
    await notifier.aclose()
    assert len(notification.attempts) == 3


def test_a_state_file_of_another_format_is_refused_clearly(tmp_path: Any) -> None:
    path = tmp_path / "sandbox.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 7")
    with pytest.raises(ValueError, match=rf"MIDTRANS_SANDBOX_STATE_FILE {path}: .*format 7"):
        SandboxStore(str(path))
