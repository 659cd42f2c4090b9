"""Leader election on a real apiserver Lease: one leader, takeover, release, partition."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from checkout_operator.leader import LeaderElector
from saga_kit.apiserver import ApiClient, load_config
from tests.conftest import Platform
from tests.helpers.waiting import eventually

DURATION = 2.0
RENEW = 0.5

ApiFactory = Callable[..., Awaitable[ApiClient]]


@pytest.fixture
async def api_client(platform: Platform) -> AsyncIterator[ApiFactory]:
    """Make apiserver clients (optionally through another address); closed at the end."""
    made: list[ApiClient] = []

    async def make(host: str | None = None) -> ApiClient:
        connection = load_config(platform.kubeconfig)
        if host:
            connection = dataclasses.replace(connection, server=host)
        api = ApiClient(connection)
        made.append(api)
        return api

    yield make
    for api in made:
        await api.close()


async def elector(
    make: ApiFactory, namespace: str, identity: str, host: str | None = None, **timing: float
) -> LeaderElector:
    return LeaderElector(
        await make(host),
        namespace,
        "checkout-operator",
        identity=identity,
        duration=timing.get("duration", DURATION),
        renew_every=timing.get("renew_every", RENEW),
    )


async def lease_holder(make: ApiFactory, namespace: str) -> str | None:
    api = await make()
    lease = await api.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/checkout-operator"
    )
    holder: str | None = lease["spec"].get("holderIdentity")
    return holder


async def test_of_two_electors_exactly_one_leads(namespace: str, api_client: ApiFactory) -> None:
    a = await elector(api_client, namespace, "a")
    b = await elector(api_client, namespace, "b")
    stop = asyncio.Event()
    tries = {e.identity: asyncio.create_task(e.acquire(stop)) for e in (a, b)}
    done, _ = await asyncio.wait(tries.values(), return_when=asyncio.FIRST_COMPLETED)
    won_at = time.monotonic()
    leader, other = (a, b) if tries["a"] in done else (b, a)
    keeping = asyncio.create_task(leader.keep(stop))
    try:
        # The other keeps trying, and is refused, for several lease durations.
        await eventually(
            lambda: time.monotonic() - won_at > 2 * DURATION and other.attempts >= 8,
            within=30.0,
            interval=0.02,
        )
        assert leader.leading and leader.renewals >= 2
        assert not other.leading and not tries[other.identity].done()
        assert await lease_holder(api_client, namespace) == leader.identity
    finally:
        stop.set()
        await keeping
        assert await tries[other.identity] is False
        await leader.release()


async def test_the_other_takes_over_only_after_the_leader_stopped_renewing_for_a_lease_duration(
    namespace: str, api_client: ApiFactory
) -> None:
    a = await elector(api_client, namespace, "a")
    b = await elector(api_client, namespace, "b")
    stop = asyncio.Event()
    assert await a.try_acquire()
    keeping = asyncio.create_task(a.keep(stop))
    await eventually(lambda: a.renewals >= 2, within=30.0, interval=0.02)
    waiting = asyncio.create_task(b.acquire(stop))
    await eventually(lambda: b.attempts >= 2, within=30.0, interval=0.02)
    keeping.cancel()  # a hangs (a stopped process, a partition): it writes nothing more
    with contextlib.suppress(asyncio.CancelledError):
        await keeping
    last_write = a.last_renewed
    assert await asyncio.wait_for(waiting, 30)
    took_over = b.last_renewed  # sent at or after the lease expired on b's clock
    assert took_over - last_write >= DURATION
    assert await lease_holder(api_client, namespace) == "b"
    # a, back again, finds the lease gone and stops leading.
    assert await a.renew() is False
    assert not a.leading
    await b.release()


async def test_release_hands_the_lease_over_without_waiting_for_expiry(
    namespace: str, api_client: ApiFactory
) -> None:
    a = await elector(api_client, namespace, "a", duration=120.0, renew_every=2.0)
    b = await elector(api_client, namespace, "b", duration=120.0, renew_every=2.0)
    assert await a.try_acquire()
    waiting = asyncio.create_task(b.acquire())
    await eventually(lambda: b.attempts >= 1, within=30.0, interval=0.02)
    await a.release()
    assert not a.leading
    # Well before the 120 s the lease would have held.
    assert await asyncio.wait_for(waiting, 30)
    assert b.leading and await lease_holder(api_client, namespace) == "b"
    await b.release()


class PausableProxy:
    """A TCP relay to the apiserver that can stop passing bytes, like a network partition."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.passing = asyncio.Event()
        self.passing.set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await self.passing.wait()
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(
            pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
        )

    async def close(self) -> None:
        self.passing.set()
        if self.server is not None:
            self.server.close()


async def test_a_cut_off_leader_stops_leading_before_anyone_else_starts(
    namespace: str, api_client: ApiFactory
) -> None:
    probe = await api_client()
    server = urlsplit(probe.connection.server)
    proxy = PausableProxy(server.hostname or "127.0.0.1", server.port or 443)
    a = await elector(api_client, namespace, "a", host=await proxy.start())
    b = await elector(api_client, namespace, "b")
    stop = asyncio.Event()
    try:
        assert await a.try_acquire()
        keeping = asyncio.create_task(a.keep(stop))
        await eventually(lambda: a.renewals >= 2, within=30.0, interval=0.02)
        proxy.passing.clear()  # a's renewals now hang
        waiting = asyncio.create_task(b.acquire(stop))
        await asyncio.wait_for(keeping, 30)  # keep() ends: a gave up
        gave_up = time.monotonic()
        assert not a.leading
        assert await asyncio.wait_for(waiting, 30)
        # a stopped before b could take over: never two leaders at once.
        assert gave_up <= b.last_renewed
        assert gave_up - a.last_renewed < DURATION
    finally:
        stop.set()
        await proxy.close()
    await b.release()


async def leading_from_its_thread(
    make: ApiFactory, namespace: str
) -> tuple[LeaderElector, asyncio.Event, asyncio.Task[None]]:
    """Elector "a", leading, renewing from its own thread until the event is set."""
    a = await elector(make, namespace, "a")
    stop = asyncio.Event()
    assert await a.try_acquire()
    return a, stop, asyncio.create_task(a.keep_in_own_thread(stop))


async def test_a_busy_operator_loop_does_not_lose_the_lease(
    namespace: str, api_client: ApiFactory
) -> None:
    """Renewals run in their own thread: the caller's loop blocked past the renew deadline
    (a restart reconciling 15,000 ended Checkouts did that) costs no lease. Red when
    renewing in the caller's loop (``keep``): lost on the first look after the block."""
    a, stop, keeping = await leading_from_its_thread(api_client, namespace)
    try:
        await eventually(lambda: a.renewals >= 2, within=30.0, interval=0.02)
        before = a.renewals
        time.sleep(3 * DURATION)  # noqa: ASYNC251  the loop busy, as with a long start
        await asyncio.sleep(RENEW)  # the loop's first look after the block
        assert a.leading and not keeping.done()
        assert a.renewals >= before + 4, "renewed while the loop was blocked"
        assert await lease_holder(api_client, namespace) == "a"
    finally:
        stop.set()
        await asyncio.wait_for(keeping, 30)
    assert a.leading  # stopped, not lost
    await a.release()  # in the caller's loop, with its own connection
    assert await lease_holder(api_client, namespace) is None


async def test_a_lease_taken_away_ends_the_thread_that_renews_it(
    namespace: str, api_client: ApiFactory
) -> None:
    a, stop, keeping = await leading_from_its_thread(api_client, namespace)
    try:
        await eventually(lambda: a.renewals >= 1, within=30.0, interval=0.02)
        api = await api_client()
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/checkout-operator"
        lease = await api.request("GET", path)
        lease["spec"]["holderIdentity"] = "someone-else"  # e.g. edited by hand
        await api.send("PUT", path, body=lease)
        await asyncio.wait_for(keeping, 30)  # ends on its own: the lease is lost
        assert not a.leading
    finally:
        stop.set()
