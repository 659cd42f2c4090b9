"""The Midtrans client: against the sandbox in-process, and error mapping on canned answers."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from midtrans import (
    ItemDetail,
    MidtransClient,
    MidtransClientError,
    MidtransConfig,
    MidtransConflict,
    MidtransError,
    MidtransServerError,
    TransactionStatus,
)
from tests.helpers.midtrans_sandbox import (
    BASE_URL,
    SERVER_KEY,
    Receiver,
    running_sandbox,
    settings,
)

ITEMS = [ItemDetail("p-1", "Kopi", 10000, 2), ItemDetail("p-2", "Teh", 5000, 2)]
TOTAL = 30000


def config(key: str = SERVER_KEY) -> MidtransConfig:
    return MidtransConfig(server_key=key, snap_base_url=BASE_URL, core_base_url=BASE_URL)


@pytest.fixture
async def sandbox() -> AsyncIterator[httpx.ASGITransport]:
    async with running_sandbox(settings(), Receiver()) as transport:
        yield transport


@pytest.fixture
async def client(sandbox: httpx.ASGITransport) -> AsyncIterator[MidtransClient]:
    async with MidtransClient(config(), transport=sandbox) as midtrans:
        yield midtrans


async def control(transport: httpx.ASGITransport, order_id: str, action: str, **body: str) -> None:
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        response = await http.post(f"/_sandbox/transactions/{order_id}/{action}", json=body)
        assert response.status_code == 200, response.text


# --- against the sandbox -----------------------------------------------------------------


async def test_snap_then_status_through_payment(
    client: MidtransClient, sandbox: httpx.ASGITransport
) -> None:
    token = await client.create_snap("order-1", TOTAL, ITEMS, expiry_minutes=15)
    assert token.token
    assert token.redirect_url == f"{BASE_URL}/snap/v3/redirection/{token.token}"
    assert await client.status("order-1") is None, "no payment method chosen yet: None"

    await control(sandbox, "order-1", "choose", payment_type="bank_transfer")
    pending = await client.status("order-1")
    assert pending is not None and pending.is_pending and not pending.is_paid
    assert pending.status_code == "201" and pending.amount_idr == TOTAL

    await control(sandbox, "order-1", "pay")
    paid = await client.status("order-1")
    assert paid is not None and paid.is_paid and paid.transaction_status == "settlement"
    assert paid.settlement_time


async def test_duplicate_order_id_is_a_conflict(client: MidtransClient) -> None:
    await client.create_snap("order-dup", TOTAL, ITEMS)
    with pytest.raises(MidtransConflict) as caught:
        await client.create_snap("order-dup", TOTAL, ITEMS)
    assert caught.value.http_status == 409
    assert "already been taken" in caught.value.error_messages[0]


async def test_duplicate_is_recognised_by_its_message_on_a_400() -> None:
    # Real Midtrans may answer a reused order_id with a plain 400: the message must suffice.
    async with (
        running_sandbox(settings(duplicate_order_status=400), Receiver()) as transport,
        MidtransClient(config(), transport=transport) as midtrans,
    ):
        await midtrans.create_snap("order-dup", TOTAL, ITEMS)
        with pytest.raises(MidtransConflict) as caught:
            await midtrans.create_snap("order-dup", TOTAL, ITEMS)
    assert caught.value.http_status == 400


async def test_a_wrong_key_is_a_permanent_error_that_does_not_show_the_key(
    sandbox: httpx.ASGITransport,
) -> None:
    wrong = "SB-Mid-server-WRONG-secret"
    async with MidtransClient(config(wrong), transport=sandbox) as midtrans:
        with pytest.raises(MidtransClientError) as caught:
            await midtrans.create_snap("order-1", TOTAL, ITEMS)
        assert repr(midtrans).count(wrong) == 0
    assert caught.value.http_status == 401
    assert not isinstance(caught.value, MidtransConflict)
    assert wrong not in str(caught.value) and wrong not in repr(caught.value)


async def test_cancel_then_cancel_again_is_412(
    client: MidtransClient, sandbox: httpx.ASGITransport
) -> None:
    await client.create_snap("order-c", TOTAL, ITEMS)
    await control(sandbox, "order-c", "choose")
    cancelled = await client.cancel("order-c")
    assert cancelled.transaction_status == "cancel" and cancelled.is_failed
    with pytest.raises(MidtransClientError) as caught:
        await client.cancel("order-c")
    assert caught.value.status_code == "412"


async def test_expire_answers_407_without_raising(
    client: MidtransClient, sandbox: httpx.ASGITransport
) -> None:
    await client.create_snap("order-e", TOTAL, ITEMS)
    await control(sandbox, "order-e", "choose")
    expired = await client.expire("order-e")
    assert expired.status_code == "407" and expired.transaction_status == "expire"
    status = await client.status("order-e")
    assert status is not None and status.is_failed and status.status_code == "407"
    with pytest.raises(MidtransClientError) as caught:
        await client.expire("order-e")
    assert caught.value.status_code == "412"


async def test_expire_before_a_payment_method_is_a_404_error(client: MidtransClient) -> None:
    await client.create_snap("order-n", TOTAL, ITEMS)
    with pytest.raises(MidtransClientError) as caught:
        await client.expire("order-n")
    assert caught.value.http_status == 404 and caught.value.status_code == "404"


async def test_partial_then_full_refund(
    client: MidtransClient, sandbox: httpx.ASGITransport
) -> None:
    await client.create_snap("order-r", TOTAL, ITEMS)
    await control(sandbox, "order-r", "pay")
    partial = await client.refund("order-r", 10000, "one item broken", "order-r-refund-1")
    assert partial.transaction_status == "partial_refund" and partial.is_refund
    assert partial.raw["refund_amount"] == "10000.00"
    full = await client.refund("order-r", 20000, "the rest", "order-r-refund-2")
    assert full.transaction_status == "refund"
    with pytest.raises(MidtransClientError) as caught:
        await client.refund("order-r", 1, "nothing left", "order-r-refund-3")
    assert caught.value.status_code == "412"


# --- what is sent -------------------------------------------------------------------------


class Recorder:
    """A MockTransport handler that records requests and answers with a canned response."""

    def __init__(self, status: int = 201, body: Any = None, content: bytes | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.status = status
        self.body = body if body is not None else {"token": "t", "redirect_url": "u"}
        self.content = content

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.content is not None:
            return httpx.Response(self.status, content=self.content)
        return httpx.Response(self.status, json=self.body)


def mocked(recorder: Callable[[httpx.Request], httpx.Response]) -> MidtransClient:
    return MidtransClient(config(), transport=httpx.MockTransport(recorder))


async def test_request_format_auth_and_truncated_names() -> None:
    recorder = Recorder()
    long_name = "N" * 80
    items = [ItemDetail("p-1", long_name, 7000, 1), ItemDetail("promo", "Diskon", -2000, 1)]
    async with mocked(recorder) as midtrans:
        await midtrans.create_snap(
            "order-1",
            5000,
            items,
            customer_details={"first_name": "Ani", "email": "ani@example.com"},
            expiry_minutes=15,
            custom_fields=["checkout-ns", "co-1"],
        )
    (request,) = recorder.requests
    assert request.url == f"{BASE_URL}/snap/v1/transactions"
    expected_auth = base64.b64encode(f"{SERVER_KEY}:".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected_auth}"
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.content)
    assert body["transaction_details"] == {"order_id": "order-1", "gross_amount": 5000}
    assert body["item_details"][0]["name"] == "N" * 50
    assert body["item_details"][1]["price"] == -2000
    assert body["expiry"] == {"unit": "minute", "duration": 15}
    assert body["customer_details"]["first_name"] == "Ani"
    assert (body["custom_field1"], body["custom_field2"]) == ("checkout-ns", "co-1")
    assert "custom_field3" not in body


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gross_amount": 30001}, "sum to 30000"),
        ({"gross_amount": 0}, "positive int"),
        ({"gross_amount": 30000.0}, "positive int"),
        ({"order_id": "a" * 51}, "1..50"),
        ({"order_id": "order/1"}, "letters, digits"),
        ({"order_id": ""}, "1..50"),
        ({"item_details": []}, "must not be empty"),
        ({"item_details": [ItemDetail("p", "x", 30000, 0)]}, "quantity must be >= 1"),
        ({"item_details": [ItemDetail("p", "  ", 30000, 1)]}, "name is required"),
        ({"item_details": [ItemDetail("p" * 51, "x", 30000, 1)]}, "longer than 50"),
        ({"expiry_minutes": 0}, "expiry_minutes"),
        ({"custom_fields": ["a", "b", "c", "d"]}, "at most 3"),
        ({"custom_fields": ["x" * 256]}, "custom_field1"),
    ],
)
async def test_invalid_snap_input_is_refused_before_sending(
    kwargs: dict[str, Any], match: str
) -> None:
    recorder = Recorder()
    arguments: dict[str, Any] = {
        "order_id": "order-1",
        "gross_amount": TOTAL,
        "item_details": ITEMS,
    }
    arguments.update(kwargs)
    async with mocked(recorder) as midtrans:
        with pytest.raises(ValueError, match=match):
            await midtrans.create_snap(**arguments)
    assert recorder.requests == []


async def test_refund_needs_a_positive_amount_and_a_key() -> None:
    recorder = Recorder()
    async with mocked(recorder) as midtrans:
        with pytest.raises(ValueError, match="positive"):
            await midtrans.refund("order-1", 0, "x", "k")
        with pytest.raises(ValueError, match="refund_key"):
            await midtrans.refund("order-1", 10, "x", "")
    assert recorder.requests == []


# --- error mapping on canned answers ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "content", "error"),
    [
        (500, {"error_messages": ["Sorry, we encountered internal server error"]}, None, "server"),
        (503, None, b"<html>Service Unavailable</html>", "server"),
        (502, None, b"", "server"),
        (429, {"error_messages": ["Too many requests"]}, None, "server"),
        (401, {"error_messages": ["Access denied"]}, None, "client"),
        (400, {"error_messages": ["transaction_details.gross_amount is required"]}, None, "client"),
        (200, None, b"not json", "server"),
        (200, {"status_code": "500", "status_message": "Internal error"}, None, "server"),
        (200, {"status_code": "412", "status_message": "cannot modify"}, None, "client"),
        (200, {"status_code": "401", "status_message": "unauthorized"}, None, "client"),
        (302, None, b"", "client"),
    ],
)
async def test_error_mapping_checks_http_and_body_status(
    status: int, body: Any, content: bytes | None, error: str
) -> None:
    expected = MidtransServerError if error == "server" else MidtransClientError
    recorder = Recorder(status, body, content)
    async with mocked(recorder) as midtrans:
        with pytest.raises(expected) as caught:
            await midtrans.cancel("order-1")
    assert caught.value.http_status == status
    if isinstance(body, dict) and "status_code" in body:
        assert caught.value.status_code == body["status_code"]
    if isinstance(body, dict) and "error_messages" in body:
        assert list(caught.value.error_messages) == body["error_messages"]
    assert SERVER_KEY not in str(caught.value)


@pytest.mark.parametrize(
    "message",
    [
        "transaction_details.order_id sudah digunakan",
        "Duplicate order ID. Order ID has already been utilized previously",
    ],
)
async def test_known_duplicate_wordings_are_conflicts(message: str) -> None:
    recorder = Recorder(400, {"error_messages": [message]})
    async with mocked(recorder) as midtrans:
        with pytest.raises(MidtransConflict):
            await midtrans.create_snap("order-1", TOTAL, ITEMS)


async def test_core_body_406_is_a_conflict() -> None:
    recorder = Recorder(200, {"status_code": "406", "status_message": "Duplicate order ID."})
    async with mocked(recorder) as midtrans:
        with pytest.raises(MidtransConflict):
            await midtrans.create_snap("order-1", TOTAL, ITEMS)


@pytest.mark.parametrize("http_status", [200, 404])
async def test_status_404_body_means_no_transaction_yet(http_status: int) -> None:
    body = {"status_code": "404", "status_message": "Transaction doesn't exist."}
    recorder = Recorder(http_status, body)
    async with mocked(recorder) as midtrans:
        assert await midtrans.status("order-1") is None
    assert recorder.requests[0].url == f"{BASE_URL}/v2/order-1/status"
    assert recorder.requests[0].method == "GET"


@pytest.mark.parametrize(
    ("body", "content"), [(None, b"<html>404 Not Found</html>"), ({"detail": "Not Found"}, None)]
)
async def test_a_404_that_is_not_midtrans_saying_so_raises(
    body: Any, content: bytes | None
) -> None:
    # A wrong base URL also answers 404: that must not pass for "no transaction yet".
    async with mocked(Recorder(404, body, content)) as midtrans:
        with pytest.raises(MidtransClientError) as caught:
            await midtrans.status("order-1")
    assert caught.value.http_status == 404


async def test_status_with_an_unexpected_body_is_a_server_error() -> None:
    async with mocked(Recorder(200, {"status_code": "200"})) as midtrans:
        with pytest.raises(MidtransServerError, match="not a transaction status"):
            await midtrans.status("order-1")


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
async def test_transport_errors_are_transient(exc: Exception) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    async with mocked(fail) as midtrans:
        with pytest.raises(MidtransServerError) as caught:
            await midtrans.status("order-1")
    assert caught.value.http_status is None
    assert caught.value.__cause__ is exc


async def test_a_snap_answer_without_a_token_is_an_error() -> None:
    async with mocked(Recorder(201, {"redirect_url": "u"})) as midtrans:
        with pytest.raises(MidtransServerError, match="no token"):
            await midtrans.create_snap("order-1", TOTAL, ITEMS)


async def test_order_ids_are_validated_before_they_reach_a_url() -> None:
    recorder = Recorder()
    async with mocked(recorder) as midtrans:
        with pytest.raises(ValueError):
            await midtrans.status("../v1/other")
    assert recorder.requests == []


async def test_an_injected_http_client_is_left_open() -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(Recorder()))
    async with MidtransClient(config(), http_client=http) as midtrans:
        await midtrans.create_snap("order-1", TOTAL, ITEMS)
    assert not http.is_closed
    await http.aclose()


# --- config and status values ---------------------------------------------------------------


def test_config_never_shows_the_key() -> None:
    cfg = MidtransConfig(server_key="SB-Mid-server-SECRET", snap_base_url="http://x/")
    assert "SECRET" not in repr(cfg) and "SECRET" not in str(cfg)
    assert cfg.snap_base_url == "http://x", "a trailing slash must not double the path slash"
    assert "SECRET" not in repr(MidtransClient(cfg))


def test_config_from_env() -> None:
    cfg = MidtransConfig.from_env(
        {
            "MIDTRANS_SERVER_KEY": "k",
            "MIDTRANS_SNAP_URL": "http://127.0.0.1:18900",
            "MIDTRANS_CORE_URL": "http://127.0.0.1:18901",
        }
    )
    assert (cfg.server_key, cfg.snap_base_url, cfg.core_base_url) == (
        "k",
        "http://127.0.0.1:18900",
        "http://127.0.0.1:18901",
    )
    defaults = MidtransConfig.from_env({"MIDTRANS_SERVER_KEY": "k"})
    assert defaults.snap_base_url == "https://app.sandbox.midtrans.com"
    assert defaults.core_base_url == "https://api.sandbox.midtrans.com"
    with pytest.raises(ValueError, match="MIDTRANS_SERVER_KEY"):
        MidtransConfig.from_env({})


def test_config_reads_and_checks_the_notification_urls() -> None:
    env = {"MIDTRANS_SERVER_KEY": "k", "MIDTRANS_NOTIFICATION_URL": "http://a.test/n, https://b/"}
    assert MidtransConfig.from_env(env).notification_urls == ("http://a.test/n", "https://b/")
    assert MidtransConfig.from_env({"MIDTRANS_SERVER_KEY": "k"}).notification_urls == ()
    with pytest.raises(ValueError, match="MIDTRANS_NOTIFICATION_URL"):
        MidtransConfig.from_env({**env, "MIDTRANS_NOTIFICATION_URL": "file:///etc/passwd"})
    with pytest.raises(ValueError, match="at most 3"):
        MidtransConfig(server_key="k", notification_urls=("http://a/",) * 4)


async def test_notification_urls_override_the_dashboard_for_snap_requests_only() -> None:
    recorder = Recorder()
    cfg = MidtransConfig(
        server_key=SERVER_KEY,
        snap_base_url=BASE_URL,
        core_base_url=BASE_URL,
        notification_urls=("http://listener.test/n", "https://two.test/n"),
    )
    async with MidtransClient(cfg, transport=httpx.MockTransport(recorder)) as midtrans:
        await midtrans.create_snap("order-1", 1000, [ItemDetail("p", "P", 1000, 1)])
        recorder.status, recorder.body = 404, {"status_code": "404"}
        await midtrans.status("order-1")
    snap, status = recorder.requests
    assert snap.headers["x-override-notification"] == "http://listener.test/n,https://two.test/n"
    assert "x-override-notification" not in status.headers
    plain_recorder = Recorder()
    async with mocked(plain_recorder) as plain:  # no URLs: the dashboard's URL applies
        await plain.create_snap("order-2", 1000, [ItemDetail("p", "P", 1000, 1)])
    assert "x-override-notification" not in plain_recorder.requests[0].headers


@pytest.mark.parametrize(
    ("status", "fraud", "paid", "pending", "failed", "refund"),
    [
        ("settlement", None, True, False, False, False),
        ("capture", "accept", True, False, False, False),
        ("capture", "challenge", False, True, False, False),
        ("capture", None, False, False, False, False),
        ("pending", "accept", False, True, False, False),
        ("deny", "deny", False, False, True, False),
        ("cancel", None, False, False, True, False),
        ("expire", None, False, False, True, False),
        ("failure", None, False, False, True, False),
        ("refund", None, False, False, False, True),
        ("partial_refund", None, False, False, False, True),
        ("chargeback", None, False, False, False, True),
        ("authorize", None, False, False, False, False),
    ],
)
def test_status_helpers(
    status: str, fraud: str | None, paid: bool, pending: bool, failed: bool, refund: bool
) -> None:
    parsed = TransactionStatus.from_json(
        {"order_id": "o", "transaction_status": status, "fraud_status": fraud}
    )
    assert (parsed.is_paid, parsed.is_pending, parsed.is_failed, parsed.is_refund) == (
        paid,
        pending,
        failed,
        refund,
    )


def test_status_parsing_is_lenient() -> None:
    parsed = TransactionStatus.from_json(
        {
            "order_id": "o",
            "transaction_status": "settlement",
            "gross_amount": "30000.00",
            "status_code": 200,  # a number where a string is documented: kept as text
            "va_numbers": [{"bank": "bca", "va_number": "123"}],  # an extra: ignored but kept
        }
    )
    assert parsed.status_code == "200" and parsed.amount_idr == 30000
    assert parsed.raw["va_numbers"][0]["bank"] == "bca"
    assert (
        TransactionStatus.from_json(
            {"order_id": "o", "transaction_status": "x", "gross_amount": "1.50"}
        ).amount_idr
        is None
    )
    with pytest.raises(ValueError):
        TransactionStatus.from_json({"order_id": "o"})


def test_errors_are_one_family() -> None:
    assert issubclass(MidtransConflict, MidtransClientError)
    assert issubclass(MidtransClientError, MidtransError)
    assert issubclass(MidtransServerError, MidtransError)


@pytest.mark.parametrize(
    "body",
    [
        {"token": "t"},
        {"token": "t", "redirect_url": ""},  # an empty link: no page to hand out
        {"token": "", "redirect_url": "u"},
        {"redirect_url": "u"},
    ],
)
async def test_a_snap_answer_without_a_token_and_a_link_is_an_error(body: dict[str, Any]) -> None:
    """A page nobody can open must not be recorded as the checkout's page (the operator
    would write it again on every look, a review of session 14): retried as transient."""
    async with mocked(Recorder(body=body)) as midtrans:
        with pytest.raises(MidtransServerError, match="no token/redirect_url"):
            await midtrans.create_snap("order-1", TOTAL, ITEMS)
