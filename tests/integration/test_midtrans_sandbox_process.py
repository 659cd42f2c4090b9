"""The sandbox as a real process, notifying a real HTTP receiver, used by the real client.

No Kubernetes here: ``python -m midtrans_sandbox`` runs on a free loopback port with a tiny
time scale (0.0002: Midtrans' 2-minute first retry becomes 24 ms, 10 minutes 120 ms), and a
minimal asyncio HTTP server plays the merchant's webhook receiver, answering per a script.
Signatures are recomputed here with hashlib, independently of the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from midtrans import (
    ItemDetail,
    MidtransClient,
    MidtransClientError,
    MidtransConfig,
    verify_signature,
)
from tests.helpers.midtrans_sandbox import eventually
from tests.helpers.processes import ModuleProcess, free_port, python_module

SERVER_KEY = "SB-Mid-server-process-test-key"
TIME_SCALE = 0.0002
INTERVALS = [minutes * 60 * TIME_SCALE for minutes in (2, 10, 30, 90, 210)]
ITEMS = [ItemDetail("p-1", "Kopi Susu", 15000, 2)]
TOTAL = 30000


@dataclass
class Hit:
    at: float
    headers: dict[str, str]
    payload: dict[str, Any]


@dataclass
class HttpReceiver:
    """A bare HTTP/1.1 server: records each POST and answers from ``script`` (then 200)."""

    port: int
    script: dict[str, list[int]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            arrived = time.monotonic()
            lines = head.split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            payload = json.loads(body)
            self.hits.append(Hit(arrived, headers, payload))
            answers = self.script.get(payload.get("order_id", ""), [])
            status = answers.pop(0) if answers else 200
            writer.write(
                f"HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def for_order(self, order_id: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.payload.get("order_id") == order_id]

    async def wait(self, order_id: str, count: int, within: float = 10.0) -> list[Hit]:
        async def arrived() -> bool:
            return len(self.for_order(order_id)) >= count

        await eventually(arrived, within)
        return self.for_order(order_id)


def documented_signature(payload: dict[str, Any]) -> str:
    raw = payload["order_id"] + payload["status_code"] + payload["gross_amount"] + SERVER_KEY
    return hashlib.sha512(raw.encode("utf-8")).hexdigest()


@pytest.fixture(scope="module")
def receiver_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def sandbox(
    receiver_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModuleProcess]:
    port = free_port()
    env = {
        "MIDTRANS_SANDBOX_SERVER_KEY": SERVER_KEY,
        "MIDTRANS_SANDBOX_HOST": "127.0.0.1",
        "MIDTRANS_SANDBOX_PORT": str(port),
        "MIDTRANS_SANDBOX_NOTIFICATION_URL": f"http://127.0.0.1:{receiver_port}/notify",
        "MIDTRANS_SANDBOX_TIME_SCALE": str(TIME_SCALE),
        "MIDTRANS_SANDBOX_DUPLICATE_STATUS": "409",
    }
    with python_module(
        "midtrans_sandbox",
        port=port,
        health_path="/_sandbox/health",
        env=env,
        log_dir=tmp_path_factory.mktemp("midtrans-sandbox"),
    ) as process:
        yield process
    # SIGTERM must end it through the lifespan shutdown (background tasks cancelled), status 0.
    assert process.process.returncode == 0, process.log()
    assert "Application shutdown complete" in process.log_path.read_text()


@pytest.fixture
async def receiver(receiver_port: int) -> AsyncIterator[HttpReceiver]:
    server = HttpReceiver(receiver_port)
    await server.start()
    yield server
    await server.aclose()


@pytest.fixture
async def client(sandbox: ModuleProcess) -> AsyncIterator[MidtransClient]:
    # Exactly how the operator configures it for real Midtrans, only the URLs differ.
    config = MidtransConfig(
        server_key=SERVER_KEY, snap_base_url=sandbox.base_url, core_base_url=sandbox.base_url
    )
    async with MidtransClient(config) as midtrans:
        yield midtrans


@pytest.fixture
async def control(sandbox: ModuleProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{sandbox.base_url}/_sandbox") as http:
        yield http


def new_order() -> str:
    return f"order-{uuid.uuid4().hex[:12]}"


async def test_checkout_paid_with_signed_notifications_retried_after_503(
    client: MidtransClient, control: httpx.AsyncClient, receiver: HttpReceiver
) -> None:
    order_id = new_order()
    receiver.script[order_id] = [503]  # the first notification fails once, then 200

    token = await client.create_snap(order_id, TOTAL, ITEMS, expiry_minutes=24 * 60)
    assert token.redirect_url.startswith(f"{control.base_url.scheme}://")
    assert await client.status(order_id) is None

    chosen = await control.post(
        f"/transactions/{order_id}/choose", json={"payment_type": "bank_transfer"}
    )
    assert chosen.status_code == 200
    pending_hits = await receiver.wait(order_id, 2)
    gap = pending_hits[1].at - pending_hits[0].at
    assert INTERVALS[0] <= gap < INTERVALS[1], f"first retry after {gap:.3f}s"

    assert (await control.post(f"/transactions/{order_id}/pay")).status_code == 200
    hits = await receiver.wait(order_id, 3)
    paid = await client.status(order_id)
    assert paid is not None and paid.is_paid and paid.gross_amount == "30000.00"

    refunded = await client.refund(order_id, TOTAL, "customer changed mind", f"{order_id}-r1")
    assert refunded.is_refund
    hits = await receiver.wait(order_id, 4)

    assert [h.payload["transaction_status"] for h in hits] == [
        "pending",
        "pending",
        "settlement",
        "refund",
    ]
    for hit in hits:
        assert hit.headers["user-agent"] == "Veritrans"
        assert hit.headers["content-type"] == "application/json"
        assert hit.payload["signature_key"] == documented_signature(hit.payload)
        assert verify_signature(hit.payload, SERVER_KEY)
        assert all(isinstance(value, str) for value in hit.payload.values())

    # The receiver records a hit before answering it: wait until the sandbox has the answers.
    async def all_delivered() -> bool:
        notes = (await control.get(f"/transactions/{order_id}")).json()["notifications"]
        return all(n["state"] == "delivered" for n in notes)

    await eventually(all_delivered)
    state = (await control.get(f"/transactions/{order_id}")).json()
    attempts = [[a["http_status"] for a in n["attempts"]] for n in state["notifications"]]
    assert attempts == [[503, 200], [200], [200]]
    assert all(a["finished_at"] for n in state["notifications"] for a in n["attempts"])


async def test_retries_stop_after_the_documented_count_on_schedule(
    client: MidtransClient, control: httpx.AsyncClient, receiver: HttpReceiver
) -> None:
    unavailable, broken = new_order(), new_order()
    receiver.script[unavailable] = [503] * 10  # 503: 4 retries
    receiver.script[broken] = [500] * 10  # 500: 1 retry
    for order_id in (unavailable, broken):
        # A day (17 s scaled): no expire notification may join the pending one's retries.
        await client.create_snap(order_id, TOTAL, ITEMS, expiry_minutes=24 * 60)
        await control.post(f"/transactions/{order_id}/choose")

    async def given_up() -> bool:
        states = [
            (await control.get(f"/transactions/{order_id}")).json()["notifications"][0]["state"]
            for order_id in (unavailable, broken)
        ]
        return states == ["failed", "failed"]

    await eventually(given_up, within=15)
    await asyncio.sleep(INTERVALS[1])  # room for a wrong extra retry to show up
    hits = receiver.for_order(unavailable)
    assert [h.payload["transaction_status"] for h in hits] == ["pending"] * 5
    assert len(receiver.for_order(broken)) == 2
    for retry, (earlier, later) in enumerate(itertools.pairwise(hits)):
        gap = later.at - earlier.at
        # At least this retry's interval (a loaded machine may take longer: the counts
        # above say which retry each one was).
        assert INTERVALS[retry] <= gap, (retry, gap)


async def test_a_pending_payment_expires_at_the_snap_expiry(
    client: MidtransClient, control: httpx.AsyncClient, receiver: HttpReceiver
) -> None:
    order_id = new_order()
    started = time.monotonic()
    await client.create_snap(order_id, TOTAL, ITEMS, expiry_minutes=60)  # 0.72 s scaled
    await control.post(f"/transactions/{order_id}/choose")
    hits = await receiver.wait(order_id, 2)
    assert hits[1].payload["transaction_status"] == "expire"
    assert hits[1].payload["status_code"] == "407"
    assert hits[1].at - started >= 60 * 60 * TIME_SCALE
    status = await client.status(order_id)
    assert status is not None and status.is_failed
    late = await control.post(f"/transactions/{order_id}/pay")
    assert late.status_code == 409


async def test_a_wrong_server_key_is_refused(sandbox: ModuleProcess) -> None:
    wrong = MidtransConfig(
        server_key="SB-Mid-server-wrong",
        snap_base_url=sandbox.base_url,
        core_base_url=sandbox.base_url,
    )
    async with MidtransClient(wrong) as midtrans:
        with pytest.raises(MidtransClientError) as caught:
            await midtrans.create_snap(new_order(), TOTAL, ITEMS)
    assert caught.value.http_status == 401


def sandbox_refusing_to_start(**settings: str) -> str:
    """Run ``python -m midtrans_sandbox`` with only these settings; it must exit 2 at once.
    Returns what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDTRANS_SANDBOX_")}
    result = subprocess.run(
        [sys.executable, "-m", "midtrans_sandbox"],
        env={**env, **settings},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_the_sandbox_will_not_start_without_a_server_key() -> None:
    assert "MIDTRANS_SANDBOX_SERVER_KEY" in sandbox_refusing_to_start()


def test_the_sandbox_will_not_start_on_a_state_file_it_cannot_open(tmp_path: Any) -> None:
    printed = sandbox_refusing_to_start(
        MIDTRANS_SANDBOX_SERVER_KEY=SERVER_KEY,
        MIDTRANS_SANDBOX_STATE_FILE=str(tmp_path / "no-such-folder" / "orders.sqlite3"),
    )
    assert "MIDTRANS_SANDBOX_STATE_FILE" in printed and "no-such-folder" in printed


async def test_a_sandbox_restarted_on_its_state_file_still_answers_for_a_paid_order(
    tmp_path: Any,
) -> None:
    """What `scripts/up` relies on after `scripts/down`: Midtrans never forgets an order."""
    port = free_port()
    env = {
        "MIDTRANS_SANDBOX_SERVER_KEY": SERVER_KEY,
        "MIDTRANS_SANDBOX_PORT": str(port),
        "MIDTRANS_SANDBOX_STATE_FILE": str(tmp_path / "orders.sqlite3"),
    }
    order_id = new_order()

    def started() -> contextlib.AbstractContextManager[ModuleProcess]:
        return python_module(
            "midtrans_sandbox",
            port=port,
            health_path="/_sandbox/health",
            env=env,
            log_dir=tmp_path,
        )

    with started() as first:
        config = MidtransConfig(
            server_key=SERVER_KEY, snap_base_url=first.base_url, core_base_url=first.base_url
        )
        async with MidtransClient(config) as midtrans, httpx.AsyncClient() as http:
            await midtrans.create_snap(order_id, TOTAL, ITEMS, expiry_minutes=60)
            paid = await http.post(f"{first.base_url}/_sandbox/transactions/{order_id}/pay")
            assert paid.status_code == 200, paid.text
            before = await midtrans.status(order_id)
    assert first.process.returncode == 0, first.log()
    with started():
        async with MidtransClient(config) as midtrans:
            after = await midtrans.status(order_id)
            with pytest.raises(MidtransClientError) as reused:
                await midtrans.create_snap(order_id, TOTAL, ITEMS)
    assert before is not None and after == before
    assert after.transaction_status == "settlement"
    assert reused.value.http_status == 409
