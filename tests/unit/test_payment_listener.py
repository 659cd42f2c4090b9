"""The webhook listener's answers, in-process: what is refused and when Midtrans must retry."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from payment_listener.app import create_app, message_id
from saga_kit.events import Topology

KEY = "SB-Mid-server-unit"


class Ack:
    seq = 7
    duplicate = False


class RecordingJetStream:
    """Stands in for JetStream; the real one is exercised by the e2e tests."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.published: list[tuple[str, bytes, dict[str, str]]] = []

    async def publish(self, subject: str, payload: bytes, **kwargs: Any) -> Ack:
        if self.fail:
            raise ConnectionError("nats down")
        self.published.append((subject, payload, kwargs["headers"]))
        return Ack()


def notification(**overrides: str) -> dict[str, str]:
    body = {
        "order_id": "order-1",
        "status_code": "200",
        "gross_amount": "10000.00",
        "transaction_status": "settlement",
    }
    body.update(overrides)
    raw = body["order_id"] + body["status_code"] + body["gross_amount"] + KEY
    body.setdefault("signature_key", hashlib.sha512(raw.encode()).hexdigest())
    return body


async def post(js: Any, body: Any, raw: bytes | None = None) -> httpx.Response:
    app = create_app(KEY, js, Topology())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://l") as c:
        if raw is not None:
            return await c.post("/midtrans/notifications", content=raw)
        return await c.post("/midtrans/notifications", json=body)


async def test_a_signed_notification_is_recorded_with_a_dedup_id() -> None:
    js = RecordingJetStream()
    reply = await post(js, notification())
    assert reply.status_code == 200 and reply.json()["status"] == "recorded"
    subject, payload, headers = js.published[0]
    assert subject == "midtrans.payment_status"
    assert headers["Nats-Msg-Id"] == message_id(notification())
    assert b'"order_id"' in payload


@pytest.mark.parametrize(
    ("body", "raw", "status", "reason"),
    [
        (None, b"{oops", 400, "MALFORMED"),
        (None, b"[1, 2]", 400, "MALFORMED"),
        ({"order_id": "x"}, None, 400, "MISSING_FIELDS"),
        (notification(signature_key="00"), None, 401, "BAD_SIGNATURE"),
        # signed over "10000.00", sent as "10000": the raw strings count, not the amount
        (
            notification(gross_amount="10000", signature_key=notification()["signature_key"]),
            None,
            401,
            "BAD_SIGNATURE",
        ),
        (None, b"x" * 70_000, 413, "BODY_TOO_LARGE"),
        (None, b"[" * 1000 + b"]" * 1000, 400, "MALFORMED"),  # once a 500
        (None, b'{"order_id": NaN}', 400, "MALFORMED"),
        (None, b'{"order_id": "\\ud800"}', 422, "INVALID_REQUEST"),
        (None, b'{"order_id": "a\\u0000"}', 422, "INVALID_REQUEST"),
    ],
)
async def test_bad_notifications_are_refused_and_not_recorded(
    body: Any, raw: bytes | None, status: int, reason: str
) -> None:
    js = RecordingJetStream()
    reply = await post(js, body, raw)
    assert (reply.status_code, reply.json()["reason"]) == (status, reason)
    assert reply.headers["content-type"] == "application/problem+json"
    assert js.published == []


async def test_nats_unavailable_means_503_so_midtrans_retries() -> None:
    assert (await post(RecordingJetStream(fail=True), notification())).status_code == 503
    assert (await post(None, notification())).status_code == 503


def test_message_id_ignores_field_order_and_separates_statuses() -> None:
    a = notification()
    b = dict(reversed(list(a.items())))
    assert message_id(a) == message_id(b)
    assert message_id(a) != message_id(notification(transaction_status="pending"))


@pytest.mark.parametrize(
    ("status", "fraud", "code"),
    [
        ("settlement", "accept", "201"),  # a genuine pending (201) relabelled settlement
        ("capture", "accept", "201"),  # a challenged capture (201) relabelled accept
        ("settlement", "accept", "407"),  # an expiry relabelled settlement
        ("made_up", "accept", "200"),
    ],
)
async def test_a_status_that_does_not_go_with_its_signed_code_is_refused(
    status: str, fraud: str, code: str
) -> None:
    js = RecordingJetStream()
    reply = await post(
        js, notification(transaction_status=status, fraud_status=fraud, status_code=code)
    )
    assert reply.status_code == 400 and reply.json()["reason"] == "INCONSISTENT_STATUS"
    assert js.published == []


@pytest.mark.parametrize(
    ("status", "fraud", "code"),
    [
        ("settlement", "accept", "200"),
        ("capture", "accept", "200"),
        ("capture", "challenge", "201"),
        ("pending", "accept", "201"),
        ("expire", "accept", "407"),
        ("deny", "deny", "202"),
        ("cancel", "accept", "200"),
        ("refund", "accept", "200"),
    ],
)
async def test_statuses_with_their_own_code_are_recorded(
    status: str, fraud: str, code: str
) -> None:
    js = RecordingJetStream()
    reply = await post(
        js, notification(transaction_status=status, fraud_status=fraud, status_code=code)
    )
    assert reply.status_code == 200, reply.text
    assert len(js.published) == 1
