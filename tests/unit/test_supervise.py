"""Supervised tasks come back after failing, and readiness tells while they are down."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saga_kit.supervise import Backoff, Readiness, every, supervised
from tests.helpers.waiting import eventually

FAST = Backoff(first=0.01, cap=0.05)


@given(st.integers(min_value=1, max_value=10**9))
def test_restart_delays_grow_to_the_cap_and_stay_there(attempt: int) -> None:
    backoff = Backoff(first=0.5, cap=30.0)
    assert 0.5 <= backoff.delay(attempt) <= backoff.delay(attempt + 1) <= 30.0


async def test_a_failing_task_is_logged_restarted_and_not_ready_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="saga_kit.supervise")
    readiness = Readiness()
    beat = readiness.heartbeat("worker")
    stop = asyncio.Event()
    runs = 0
    seen_down: list[dict[str, str]] = []

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        seen_down.append(readiness.problems())
        if runs <= 2:
            raise ConnectionError(f"cut off {runs}")
        beat.beat()
        await stop.wait()

    task = asyncio.create_task(supervised("worker", flaky, stop=stop, backoff=FAST, heartbeat=beat))
    await eventually(lambda: readiness.ready)
    assert runs == 3
    assert seen_down[0] == {"worker": "not started"}
    assert "cut off 2" in seen_down[2]["worker"]
    failures = [r for r in caplog.records if "task worker failed" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info is not None
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_a_task_that_returns_before_stop_is_started_again() -> None:
    stop = asyncio.Event()
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            stop.set()

    await asyncio.wait_for(supervised("quitter", quits, stop=stop, backoff=FAST), 5)
    assert runs == 3


async def test_stop_ends_the_wait_for_a_restart() -> None:
    stop = asyncio.Event()
    failed = asyncio.Event()

    async def fails() -> None:
        failed.set()
        raise RuntimeError("down")

    task = asyncio.create_task(supervised("slow", fails, stop=stop, backoff=Backoff(first=60)))
    await failed.wait()
    stop.set()
    await asyncio.wait_for(task, 1)


def test_a_heartbeat_goes_stale_without_progress() -> None:
    now = [100.0]
    readiness = Readiness(clock=lambda: now[0])
    beat = readiness.heartbeat("consumer", stale_after=10)
    beat.beat()
    now[0] += 10
    assert readiness.ready
    now[0] += 1
    assert readiness.problems() == {"consumer": "no progress for 11s"}
    beat.beat()
    assert readiness.ready
    beat.fail("restart 1 in 0.5s")
    assert readiness.problems() == {"consumer": "restart 1 in 0.5s"}
    with pytest.raises(ValueError, match="already registered"):
        readiness.heartbeat("consumer")


async def test_every_keeps_going_after_a_failed_round_and_ends_on_stop() -> None:
    stop = asyncio.Event()
    rounds: list[int] = []

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise ConnectionError("the database is away")
        if len(rounds) == 3:
            stop.set()

    await asyncio.wait_for(every(0.001, work, stop, "test round"), 5)
    assert rounds == [0, 1, 2]  # the failure did not end it; the stop did
