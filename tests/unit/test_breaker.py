"""The Midtrans circuit breaker, on a fake clock: no sleeps, no servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from checkout_operator.breaker import CircuitBreaker, CircuitOpen

# A breaker bug must fail these tests, not hang them.
pytestmark = pytest.mark.timeout(10)

THRESHOLD = 3
COOLDOWN = 30.0


class Transient(Exception):
    """A gateway failure (5xx, timeout)."""


class Permanent(Exception):
    """A refusal (4xx): says nothing about the gateway's health."""


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Gateway:
    """Counts the calls that got through the breaker."""

    def __init__(self) -> None:
        self.calls = 0

    def ok(self, value: str = "ok") -> Callable[[], Awaitable[str]]:
        async def fn() -> str:
            self.calls += 1
            return value

        return fn

    def fail(self, exc: type[Exception] = Transient) -> Callable[[], Awaitable[str]]:
        async def fn() -> str:
            self.calls += 1
            raise exc("gateway says no")

        return fn


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(
        threshold=THRESHOLD, cooldown=COOLDOWN, transient=(Transient,), clock=clock
    )


async def until_started(task: asyncio.Task[str], started: asyncio.Event) -> None:
    """Wait until ``task`` is inside the gateway call; fail (not hang) if it never gets there."""
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not started.is_set():
        await task  # raises what stopped it (CircuitOpen), or:
        raise AssertionError("the call ended without reaching the gateway")


async def fail_times(breaker: CircuitBreaker, gateway: Gateway, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Transient):
            await breaker.call(gateway.fail())


async def open_circuit(breaker: CircuitBreaker, gateway: Gateway) -> None:
    await fail_times(breaker, gateway, THRESHOLD)
    assert breaker.state == "open"


async def test_a_closed_circuit_passes_results_through(breaker: CircuitBreaker) -> None:
    gateway = Gateway()
    assert breaker.state == "closed"
    assert await breaker.call(gateway.ok("token")) == "token"
    assert gateway.calls == 1
    assert breaker.state == "closed"


async def test_it_opens_after_threshold_consecutive_transient_failures(
    breaker: CircuitBreaker,
) -> None:
    gateway = Gateway()
    await fail_times(breaker, gateway, THRESHOLD - 1)
    assert breaker.state == "closed"
    await fail_times(breaker, gateway, 1)
    assert breaker.state == "open"
    assert gateway.calls == THRESHOLD


async def test_an_open_circuit_fails_fast(breaker: CircuitBreaker, clock: Clock) -> None:
    gateway = Gateway()
    await open_circuit(breaker, gateway)
    for _ in range(5):
        with pytest.raises(CircuitOpen):
            await breaker.call(gateway.ok())
        clock.advance(COOLDOWN / 10)
    assert gateway.calls == THRESHOLD, "no call may reach the gateway while open"
    assert breaker.state == "open"


async def test_it_half_opens_after_the_cooldown(breaker: CircuitBreaker, clock: Clock) -> None:
    gateway = Gateway()
    await open_circuit(breaker, gateway)
    clock.advance(COOLDOWN - 0.001)
    assert breaker.state == "open"
    clock.advance(0.001)
    assert breaker.state == "half-open"


async def test_a_successful_trial_closes_it(breaker: CircuitBreaker, clock: Clock) -> None:
    gateway = Gateway()
    await open_circuit(breaker, gateway)
    clock.advance(COOLDOWN)
    assert await breaker.call(gateway.ok("back")) == "back"
    assert breaker.state == "closed"
    # Closed for real: it takes a full threshold of failures to open it again.
    await fail_times(breaker, gateway, THRESHOLD - 1)
    assert breaker.state == "closed"
    assert await breaker.call(gateway.ok()) == "ok"


async def test_a_failed_trial_reopens_it(breaker: CircuitBreaker, clock: Clock) -> None:
    gateway = Gateway()
    await open_circuit(breaker, gateway)
    clock.advance(COOLDOWN + 5)
    await fail_times(breaker, gateway, 1)
    assert breaker.state == "open"
    calls = gateway.calls
    with pytest.raises(CircuitOpen):
        await breaker.call(gateway.ok())
    assert gateway.calls == calls
    # A fresh cooldown, counted from the failed trial.
    clock.advance(COOLDOWN - 1)
    assert breaker.state == "open"
    clock.advance(1)
    assert breaker.state == "half-open"
    assert await breaker.call(gateway.ok()) == "ok"
    assert breaker.state == "closed"


async def test_only_one_trial_at_a_time(breaker: CircuitBreaker, clock: Clock) -> None:
    gateway = Gateway()
    await open_circuit(breaker, gateway)
    clock.advance(COOLDOWN)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "trial"

    trial = asyncio.create_task(breaker.call(slow))
    await until_started(trial, started)
    assert breaker.state == "half-open"
    with pytest.raises(CircuitOpen):
        await breaker.call(gateway.ok())
    assert gateway.calls == THRESHOLD, "the second call must not reach the gateway"
    release.set()
    assert await trial == "trial"
    assert breaker.state == "closed"
    assert await breaker.call(gateway.ok()) == "ok"


async def test_a_concurrent_call_is_refused_while_a_failing_trial_runs(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    gateway = Gateway()
    await open_circuit(breaker, gateway)
    clock.advance(COOLDOWN)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_failure() -> str:
        started.set()
        await release.wait()
        raise Transient("still down")

    trial = asyncio.create_task(breaker.call(slow_failure))
    await until_started(trial, started)
    with pytest.raises(CircuitOpen):
        await breaker.call(gateway.ok())
    release.set()
    with pytest.raises(Transient):
        await trial
    assert breaker.state == "open"


@pytest.mark.parametrize("ending", ["permanent", "cancelled"])
async def test_a_trial_that_ends_otherwise_frees_the_trial_slot(
    breaker: CircuitBreaker, clock: Clock, ending: str
) -> None:
    gateway = Gateway()
    await open_circuit(breaker, gateway)
    clock.advance(COOLDOWN)
    if ending == "permanent":
        with pytest.raises(Permanent):
            await breaker.call(gateway.fail(Permanent))
    else:
        started = asyncio.Event()

        async def hang() -> str:
            started.set()
            await asyncio.Event().wait()
            return "never"

        task = asyncio.create_task(breaker.call(hang))
        await until_started(task, started)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The slot is not stuck: the next call is let through as a trial.
    assert await breaker.call(gateway.ok()) == "ok"
    assert breaker.state == "closed"


async def test_non_transient_errors_do_not_count(breaker: CircuitBreaker) -> None:
    gateway = Gateway()
    for _ in range(THRESHOLD * 3):
        with pytest.raises(Permanent):
            await breaker.call(gateway.fail(Permanent))
    assert breaker.state == "closed"
    await fail_times(breaker, gateway, THRESHOLD - 1)
    with pytest.raises(Permanent):
        await breaker.call(gateway.fail(Permanent))
    assert breaker.state == "closed"
    assert gateway.calls == THRESHOLD * 3 + THRESHOLD


async def test_a_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    gateway = Gateway()
    for _ in range(5):
        await fail_times(breaker, gateway, THRESHOLD - 1)
        assert await breaker.call(gateway.ok()) == "ok"
        assert breaker.state == "closed"
    await fail_times(breaker, gateway, THRESHOLD - 1)
    assert breaker.state == "closed"
    await fail_times(breaker, gateway, 1)
    assert breaker.state == "open"


async def test_by_default_every_exception_is_transient(clock: Clock) -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=COOLDOWN, clock=clock)
    gateway = Gateway()
    with pytest.raises(Permanent):
        await breaker.call(gateway.fail(Permanent))
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen):
        await breaker.call(gateway.ok())
