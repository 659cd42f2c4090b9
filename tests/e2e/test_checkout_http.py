"""End to end over HTTP through the real processes: the shop's and Midtrans' doors."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import uuid
from typing import Any

import httpx

from tests.e2e.conftest import System
from tests.e2e.payment_stream import payment_stream
from tests.helpers.waiting import eventually


async def checkout(
    system: System,
    http: httpx.AsyncClient,
    auth: dict[str, str],
    product: dict[str, Any],
    quantity: int = 1,
    **extra: Any,
) -> httpx.Response:
    body = {
        "products": [{"id": product["id"], "price": product["price"], "quantity": quantity}],
        **extra.pop("body", {}),
    }
    return await http.post(f"{system.api}/api/v1/checkouts", json=body, headers={**auth, **extra})


async def wait_phase(
    system: System, http: httpx.AsyncClient, auth: dict[str, str], cid: str, *phases: str
) -> dict[str, Any]:
    body: dict[str, Any] = {}

    async def reached() -> bool:
        body.clear()
        body.update((await http.get(f"{system.api}/api/v1/checkouts/{cid}", headers=auth)).json())
        return body.get("phase") in phases

    await eventually(
        reached, within=60, interval=0.1, failure=lambda: f"{cid} not {phases}: {body}"
    )
    return body


async def shop(
    system: System, http: httpx.AsyncClient, buyers: int = 1, **product: int
) -> tuple[list[dict[str, str]], dict[str, str], dict[str, object]]:
    """``buyers`` accounts (their auth headers), then an owner's account and one product
    of theirs (``price``, ``stock``): ``buyers, owner, product``."""
    accounts = [(await system.account(http))[1] for _ in range(buyers)]
    _, owner = await system.account(http)
    return accounts, owner, await system.product(http, owner, **product)


async def available(system: System, http: httpx.AsyncClient, product_id: str) -> int:
    return int((await http.get(f"{system.products}/products/{product_id}")).json()["available"])


def signed(
    system: System, order_id: str, status: str, gross: str, code: str = "200"
) -> dict[str, str]:
    signature = hashlib.sha512(f"{order_id}{code}{gross}{system.server_key}".encode()).hexdigest()
    return {
        "order_id": order_id,
        "status_code": code,
        "gross_amount": gross,
        "signature_key": signature,
        "transaction_status": status,
        "transaction_id": str(uuid.uuid4()),
        "fraud_status": "accept",
        "payment_type": "bank_transfer",
        "transaction_time": "2026-01-01 10:00:00",
        "settlement_time": "2026-01-01 10:00:05",
        "currency": "IDR",
    }


async def test_pay_flow_reaches_settled_through_the_webhook(system: System) -> None:
    """Settled by Midtrans' notification through the listener and the operator's inbox,
    not by the poller that would settle it too (a few seconds later) if either broke."""
    async with httpx.AsyncClient(timeout=30) as http, payment_stream(system) as stream:
        [buyer], owner, product = await shop(system, http, price=20_000, stock=5)
        reply = await checkout(system, http, buyer, product, 2)
        assert reply.status_code == 201, reply.text
        created = reply.json()
        assert created["phase"] == "AwaitingPayment" and created["total"] == 40_000
        assert created["snap_token"] and created["redirect_url"] and created["expires_at"]
        assert await available(system, http, str(product["id"])) == 3
        before = await stream.last_seq()
        paid = await http.post(
            f"{system.sandbox}/_sandbox/transactions/{created['id']}/pay", json={}
        )
        assert paid.status_code == 200, paid.text
        sent = [n["payload"] for n in paid.json()["notifications"]]
        assert [n["transaction_status"] for n in sent] == ["pending", "settlement"]
        # The listener recorded what the sandbox sent, as sent.
        recorded = await stream.wait_recorded(created["id"], before, count=len(sent))
        assert [r.payload for r in recorded] == sent
        # The inbox settles a checkout before it acknowledges the notification. One that
        # acknowledged without settling leaves it AwaitingPayment here (the poller looks
        # only seconds after the page was made); one that never acknowledges fails the wait.
        await stream.wait_acked(recorded[0].seq)
        shown = await http.get(f"{system.api}/api/v1/checkouts/{created['id']}", headers=buyer)
        assert shown.json()["phase"] == "Settled", shown.json()
        listed = (await http.get(f"{system.api}/api/v1/checkouts", headers=buyer)).json()
        assert [c["id"] for c in listed["items"]] == [created["id"]]
        owner_view = await http.get(
            f"{system.api}/api/v1/products/{product['id']}/checkouts", headers=owner
        )
        assert owner_view.status_code == 200
        assert [c["id"] for c in owner_view.json()["items"]] == [created["id"]]
        payment = resource(system, created["id"])["status"]["payment"]
        assert payment["transactionStatus"] == "settlement", payment


async def test_the_listener_writes_the_settlement_kubectl_shows_it(system: System) -> None:
    """A buyer chooses a bank transfer (Midtrans notifies "pending"), then pays it: the
    listener, asked by Midtrans' "settlement" notification, confirms it with Midtrans and
    writes the Checkout Settled itself; `kubectl` shows who wrote what."""
    async with httpx.AsyncClient(timeout=30) as http, payment_stream(system) as stream:
        [buyer], _, product = await shop(system, http, price=15_000, stock=2)
        reply = await checkout(system, http, buyer, product, 1)
        assert reply.status_code == 201, reply.text
        order = reply.json()["id"]
        transaction = f"{system.sandbox}/_sandbox/transactions/{order}"
        before = await stream.last_seq()
        chose = await http.post(f"{transaction}/choose", json={"payment_type": "bank_transfer"})
        assert chose.status_code == 200, chose.text
        [pending] = await stream.wait_recorded(order, before, count=1)
        await stream.wait_acked(pending.seq)  # the operator asked Midtrans: not paid yet
        paid = await http.post(f"{transaction}/pay", json={})
        assert paid.status_code == 200, paid.text
        await wait_phase(system, http, buyer, order, "Settled")
        got = system.platform.kubectl(
            "get", "checkout", order, "-o", "json", "--show-managed-fields", namespace="default"
        )
        managers = {
            (m["manager"], m.get("subresource", ""))
            for m in json.loads(got.stdout)["metadata"]["managedFields"]
        }
        assert ("payment-listener", "status") in managers, managers
        assert ("checkout-operator", "status") in managers, managers  # the payment page


async def test_unpaid_checkout_expires_and_the_stock_comes_back(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        [buyer], _, product = await shop(system, http, stock=4)
        reply = await checkout(system, http, buyer, product, 3, body={"payment_ttl_seconds": 2})
        assert reply.status_code == 201, reply.text
        assert await available(system, http, str(product["id"])) == 1
        assert reply.json()["redirect_url"]
        await wait_phase(system, http, buyer, reply.json()["id"], "Expired")
        # A finished checkout hands out no payment link any more.
        shown = (await http.get(f"{system.api}{reply.json()['status_url']}", headers=buyer)).json()
        assert shown["redirect_url"] is None and shown["snap_token"] is None

        async def released() -> bool:
            return await available(system, http, str(product["id"])) == 4

        await eventually(released, within=15, interval=0.1)


def resource(system: System, name: str) -> dict[str, Any]:
    got = system.platform.kubectl("get", "checkout", name, "-o", "json", namespace="default")
    return dict(json.loads(got.stdout))


def unchanged(system: System, name: str, seen: dict[str, Any]) -> None:
    """The checkout's phase and payment are as ``seen`` (after a positive signal)."""
    now = resource(system, name)["status"]
    assert (now["phase"], now.get("payment")) == (seen["phase"], seen.get("payment")), now


async def test_forged_malformed_duplicate_and_stale_webhooks_change_nothing(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http, payment_stream(system) as stream:
        [buyer], _, product = await shop(system, http, price=15_000, stock=3)
        created = (await checkout(system, http, buyer, product, 1)).json()
        cid = created["id"]
        waiting = resource(system, cid)["status"]
        assert waiting["phase"] == "AwaitingPayment"
        before = await stream.last_seq()
        forged = signed(system, cid, "settlement", "15000.00")
        forged["signature_key"] = "0" * 128
        assert (await http.post(system.listener, json=forged)).status_code == 401
        assert (await http.post(system.listener, content=b"not json")).status_code == 400
        missing = signed(system, cid, "settlement", "15000.00")
        del missing["signature_key"]
        reply = await http.post(system.listener, json=missing)
        assert reply.status_code == 400 and "signature_key" in reply.text
        # Refused at the door, synchronously: nothing of them reached the operator.
        assert await stream.recorded(cid, before) == []
        unchanged(system, cid, waiting)

        # Signed with the server key but never paid at Midtrans: recorded, then checked
        # against the status API by the operator, which finds nothing paid.
        unpaid = await http.post(
            system.listener, json=signed(system, cid, "settlement", "15000.00")
        )
        assert unpaid.status_code == 200
        # A genuine pending notification (201) relabelled settlement: refused at the door.
        relabelled = signed(system, cid, "pending", "15000.00", "201")
        relabelled["transaction_status"] = "settlement"
        refused = await http.post(system.listener, json=relabelled)
        assert refused.status_code == 400 and refused.json()["reason"] == "INCONSISTENT_STATUS"
        [recorded] = await stream.recorded(cid, before)
        assert recorded.payload["transaction_status"] == "settlement"
        await stream.wait_acked(recorded.seq)  # the inbox asked Midtrans and was done
        unchanged(system, cid, waiting)

        # The buyer pays for real; Midtrans' own notification, delivered twice, settles once.
        paid = await http.post(
            f"{system.sandbox}/_sandbox/transactions/{cid}/pay",
            json={"payment_type": "bank_transfer"},
        )
        assert paid.status_code == 200, paid.text
        genuine = paid.json()["notifications"][-1]["payload"]
        first = await http.post(system.listener, json=genuine)
        again = await http.post(system.listener, json=genuine)
        assert first.status_code == again.status_code == 200
        assert again.json()["duplicate"] is True
        await wait_phase(system, http, buyer, cid, "Settled")
        settled = resource(system, cid)["status"]
        assert settled["payment"]["transactionStatus"] == "settlement", settled
        after_settled = await stream.last_seq()
        stale = signed(system, cid, "pending", "15000.00", "201")
        assert (await http.post(system.listener, json=stale)).status_code == 200
        [late] = [r for r in await stream.recorded(cid, after_settled) if r.payload == stale]
        await stream.wait_acked(late.seq)
        unchanged(system, cid, settled)
        unknown = await http.post(
            system.listener, json=signed(system, "no-such-order", "settlement", "1.00")
        )
        assert unknown.status_code == 200


async def test_idempotency_key_returns_the_same_checkout(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        [buyer], _, product = await shop(system, http, stock=5)
        key = {"Idempotency-Key": uuid.uuid4().hex}
        first = await checkout(system, http, buyer, product, 2, **key)
        again = await checkout(system, http, buyer, product, 2, **key)
        assert first.status_code == 201 and again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert first.json()["id"] == again.json()["id"]
        assert await available(system, http, str(product["id"])) == 3
        other = await checkout(system, http, buyer, product, 1, **key)
        assert other.status_code == 422 and other.json()["reason"] == "IDEMPOTENCY_KEY_REUSED"


async def test_users_never_see_or_cancel_each_others_checkouts(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        [alice, bob], _, product = await shop(system, http, buyers=2, stock=5)
        cid = (await checkout(system, http, alice, product)).json()["id"]
        assert (
            await http.get(f"{system.api}/api/v1/checkouts/{cid}", headers=bob)
        ).status_code == 404
        assert (
            await http.post(f"{system.api}/api/v1/checkouts/{cid}/cancel", headers=bob)
        ).status_code == 404
        assert (await http.get(f"{system.api}/api/v1/checkouts", headers=bob)).json()["items"] == []
        listing = await http.get(
            f"{system.api}/api/v1/products/{product['id']}/checkouts", headers=bob
        )
        assert listing.status_code == 403
        assert (await http.get(f"{system.api}/api/v1/checkouts/{cid}")).status_code == 401
        cancelled = await http.post(f"{system.api}/api/v1/checkouts/{cid}/cancel", headers=alice)
        assert cancelled.status_code == 202
        await wait_phase(system, http, alice, cid, "Cancelled")
        again = await http.post(f"{system.api}/api/v1/checkouts/{cid}/cancel", headers=alice)
        assert again.status_code == 409


async def test_a_seller_sees_the_phase_total_and_own_line_only(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        [buyer], seller, mine = await shop(system, http, price=7_000, stock=3)
        _, other_seller, theirs = await shop(system, http, buyers=0, price=2_000, stock=3)
        cart = {
            "products": [
                {"id": mine["id"], "price": 7_000, "quantity": 1},
                {"id": theirs["id"], "price": 2_000, "quantity": 2},
            ]
        }
        created = await http.post(f"{system.api}/api/v1/checkouts", json=cart, headers=buyer)
        assert created.status_code == 201 and created.json()["redirect_url"], created.text
        view = await http.get(
            f"{system.api}/api/v1/products/{mine['id']}/checkouts", headers=seller
        )
        assert view.status_code == 200, view.text
        (sale,) = view.json()["items"]
        assert sale["id"] == created.json()["id"] and sale["phase"] == "AwaitingPayment"
        assert sale["total"] == 11_000
        assert sale["items"] == [{"product_id": mine["id"], "unit_price": 7_000, "quantity": 1}]
        assert "redirect_url" not in sale and "snap_token" not in sale
        assert created.json()["redirect_url"] not in view.text
        others = await http.get(
            f"{system.api}/api/v1/products/{mine['id']}/checkouts", headers=other_seller
        )
        assert others.status_code == 403


async def test_refusals_name_the_reason(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        [buyer], _, product = await shop(system, http, price=9_000, stock=1)
        too_many = await checkout(system, http, buyer, product, 2)
        assert too_many.status_code == 409
        assert too_many.json()["reason"] == "InsufficientStock"
        assert str(product["id"]) in too_many.json()["detail"]
        wrong_price = await checkout(system, http, buyer, {**product, "price": 8_000})
        assert wrong_price.status_code == 409
        assert wrong_price.json()["reason"] == "PriceMismatch"
        unknown = await checkout(system, http, buyer, {"id": "nope", "price": 1})
        assert unknown.status_code == 422 and unknown.json()["reason"] == "ProductNotFound"
        twice = await http.post(
            f"{system.api}/api/v1/checkouts",
            json={"products": [{"id": "a", "price": 1, "quantity": 1}] * 2},
            headers=buyer,
        )
        assert twice.status_code == 422 and "listed twice" in twice.text
        docs = await http.get(f"{system.api}/openapi.json")
        assert docs.status_code == 200 and "/api/v1/checkouts" in docs.json()["paths"]


# --- no stock hoarding: TTL cap, open checkouts per user, POST rate (the defaults) ---------


async def test_a_ttl_above_the_cap_is_refused_and_a_kubectl_checkout_is_capped(
    system: System,
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        buyer_id, buyer = await system.account(http)
        _, _, product = await shop(system, http, buyers=0, stock=5)
        week = await checkout(system, http, buyer, product, body={"payment_ttl_seconds": 604_800})
        assert week.status_code == 422, week.text
        assert week.headers["content-type"] == "application/problem+json"
        assert (week.json()["reason"], week.json()["detail"]) == (
            "PaymentTTLTooLong",
            "payment_ttl_seconds 604800 exceeds the limit of 3600 seconds",
        )
        assert await available(system, http, str(product["id"])) == 5
        # kubectl may ask for a day (the CRD's ceiling); the operator gives at most the cap.
        name = f"co-day-{uuid.uuid4().hex[:8]}"
        resource = {
            "apiVersion": "checkout.saga.dev/v1alpha1",
            "kind": "Checkout",
            "metadata": {"name": name},
            "spec": {
                "userId": buyer_id,
                "items": [
                    {"productId": product["id"], "unitPrice": product["price"], "quantity": 1}
                ],
                "paymentTTLSeconds": 86_400,
            },
        }
        system.platform.kubectl(
            "create", "-f", "-", namespace="default", stdin=json.dumps(resource)
        )
        seen = await wait_phase(system, http, buyer, name, "AwaitingPayment")
        assert seen["expires_at"] and seen["created_at"]
        held = dt.datetime.fromisoformat(seen["expires_at"]) - dt.datetime.fromisoformat(
            seen["created_at"]
        )
        assert held <= dt.timedelta(seconds=3_600 + 30), held
        got = system.platform.kubectl("get", "checkout", name, "-o", "json", namespace="default")
        (ready,) = [
            c for c in json.loads(got.stdout)["status"]["conditions"] if c["type"] == "PaymentReady"
        ]
        assert "capped at 3600" in ready["message"]
        snap = (await http.get(f"{system.sandbox}/_sandbox/transactions/{name}")).json()
        snap_held = dt.datetime.fromisoformat(snap["expires_at"]) - dt.datetime.fromisoformat(
            seen["created_at"]
        )
        assert snap_held <= dt.timedelta(seconds=3_600 + 30), snap
        cancel = await http.post(f"{system.api}/api/v1/checkouts/{name}/cancel", headers=buyer)
        assert cancel.status_code == 202


async def _finished_in_read_model(
    system: System, http: httpx.AsyncClient, auth: dict[str, str], cid: str
) -> None:
    """Until the buyer's listing (the read model the limit counts from) shows it ended."""

    async def listed_cancelled() -> bool:
        listed = (await http.get(f"{system.api}/api/v1/checkouts", headers=auth)).json()
        return any(c["id"] == cid and c["phase"] == "Cancelled" for c in listed["items"])

    await eventually(listed_cancelled, within=30, interval=0.1)


async def test_one_user_cannot_open_more_checkouts_than_the_limit(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        [alice, bob], _, product = await shop(system, http, buyers=2, stock=20)
        burst = await asyncio.gather(*(checkout(system, http, alice, product) for _ in range(6)))
        codes = sorted(r.status_code for r in burst)
        assert codes == [201] * 5 + [429], [r.text for r in burst]
        (refused,) = [r for r in burst if r.status_code == 429]
        assert refused.json()["reason"] == "TooManyOpenCheckouts"
        assert "the limit is 5" in refused.json()["detail"]
        # The soonest expiry (900 s), or the cap while the others have no payment page yet.
        assert 1 <= int(refused.headers["retry-after"]) <= 3_600
        assert await available(system, http, str(product["id"])) == 15
        assert (await checkout(system, http, bob, product)).status_code == 201
        ids = [r.json()["id"] for r in burst if r.status_code == 201]
        cancelled = await http.post(f"{system.api}/api/v1/checkouts/{ids[0]}/cancel", headers=alice)
        assert cancelled.status_code == 202
        await _finished_in_read_model(system, http, alice, ids[0])
        again = await checkout(system, http, alice, product)
        assert again.status_code == 201, again.text
        for cid in [*ids[1:], again.json()["id"]]:  # give the stock back
            await http.post(f"{system.api}/api/v1/checkouts/{cid}/cancel", headers=alice)


async def test_posts_beyond_the_rate_get_429_with_retry_after(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        [alice, bob], _, product = await shop(system, http, buyers=2, stock=5)
        key = {"Idempotency-Key": uuid.uuid4().hex}  # one checkout; its retries count too
        for _ in range(10):  # the default burst
            reply = await checkout(system, http, alice, product, 1, **key)
            assert reply.status_code in (200, 201), reply.text
        limited = await checkout(system, http, alice, product, 1, **key)
        assert limited.status_code == 429, limited.text
        assert limited.json()["reason"] == "RateLimited"
        assert 1 <= int(limited.headers["retry-after"]) <= 6  # 10 per minute: a token per 6 s
        assert (await checkout(system, http, bob, product)).status_code == 201
