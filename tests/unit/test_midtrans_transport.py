"""The Midtrans client's default network layer (httpx over aiohttp) against a real local
HTTP server: what is sent and answered arrives whole, and transport failures are the
client's retryable errors."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiohttp import web

from midtrans import ItemDetail, MidtransClient, MidtransConfig, MidtransServerError
from midtrans.transport import AiohttpTransport
from tests.helpers.processes import free_port

ORDER = "order-1"
STATUS = {
    "status_code": "200",
    "transaction_status": "settlement",
    "order_id": ORDER,
    "gross_amount": "10000.00",
    "currency": "IDR",
}


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[web.Request], list[bytes]]]:
    seen: list[web.Request] = []
    bodies: list[bytes] = []

    async def status(request: web.Request) -> web.Response:
        seen.append(request)
        data = gzip.compress(json.dumps(STATUS).encode())  # httpx decodes, as it would
        return web.Response(
            body=data, content_type="application/json", headers={"Content-Encoding": "gzip"}
        )

    async def snap(request: web.Request) -> web.Response:
        seen.append(request)
        bodies.append(await request.read())
        return web.json_response({"token": "tok", "redirect_url": "https://pay/tok"}, status=201)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)  # past the client's timeout
        return web.json_response(STATUS)

    app = web.Application()
    app.router.add_get(f"/v2/{ORDER}/status", status)
    app.router.add_get("/v2/slow/status", slow)
    app.router.add_post("/snap/v1/transactions", snap)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", seen, bodies
    await runner.cleanup()


def client(base: str, timeout: float = 5.0) -> MidtransClient:
    config = MidtransConfig(
        server_key="SB-key", snap_base_url=base, core_base_url=base, timeout=timeout
    )
    return MidtransClient(config)


async def test_requests_and_answers_pass_whole(
    server: tuple[str, list[web.Request], list[bytes]],
) -> None:
    base, seen, bodies = server
    async with client(base) as midtrans:
        assert isinstance(midtrans._http._transport, AiohttpTransport)
        for _ in range(3):  # one pooled connection, reused
            status = await midtrans.status(ORDER)
            assert status is not None and status.is_paid and status.order_id == ORDER
        snap = await midtrans.create_snap(
            ORDER, 10_000, [ItemDetail(id="p", name="p", price=10_000, quantity=1)]
        )
    assert (snap.token, snap.redirect_url) == ("tok", "https://pay/tok")
    assert seen[0].headers["Authorization"].startswith("Basic ")
    assert seen[-1].headers["Content-Type"] == "application/json"
    sent = json.loads(bodies[0])
    assert sent["transaction_details"] == {"order_id": ORDER, "gross_amount": 10_000}


async def test_a_timeout_or_a_refused_connection_is_a_retryable_error(
    server: tuple[str, list[web.Request], list[bytes]],
) -> None:
    base, _, _ = server
    async with client(base, timeout=0.2) as midtrans:
        with pytest.raises(MidtransServerError, match="Timeout"):
            await midtrans.status("slow")
    async with client(f"http://127.0.0.1:{free_port()}") as midtrans:
        with pytest.raises(MidtransServerError, match="ConnectError"):
            await midtrans.status(ORDER)


async def test_the_proxy_of_the_environment_carries_the_calls(
    server: tuple[str, list[web.Request], list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP(S)_PROXY / NO_PROXY are honoured, as httpx's own transport does: a cluster
    whose egress goes through a proxy still reaches Midtrans."""
    proxy, seen, _ = server  # it answers the proxied request for the status path
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with client("http://midtrans.invalid") as midtrans:
        status = await midtrans.status(ORDER)
    assert status is not None and status.order_id == ORDER
    assert seen[0].headers["Host"] == "midtrans.invalid"


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor, counting the work handed to it."""

    submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        CountingExecutor.submitted += 1
        return super().submit(fn, *args, **kwargs)


async def test_a_call_hands_no_work_to_a_thread(
    server: tuple[str, list[web.Request], list[bytes]],
) -> None:
    """The proxy settings are looked up once per origin, not on every request in a thread
    (aiohttp's trust_env read ~/.netrc in the loop's executor for each call: 4-6 % of the
    operator's busy CPU with paid checkouts)."""
    base, seen, _ = server
    asyncio.get_running_loop().set_default_executor(CountingExecutor(max_workers=2))
    CountingExecutor.submitted = 0
    async with client(base) as midtrans:
        for _ in range(5):
            assert await midtrans.status(ORDER) is not None
    assert len(seen) == 5
    assert CountingExecutor.submitted == 0
