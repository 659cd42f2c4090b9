"""The suite's one budget for waits (tests/helpers/waiting.py)."""

from __future__ import annotations

import time

import pytest

from tests.helpers.waiting import (
    DEFAULT_PATIENCE,
    PATIENCE_ENV,
    budget,
    deadline,
    eventually,
    eventually_sync,
    patience,
)


def test_patience_defaults_and_scales_every_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PATIENCE_ENV, raising=False)
    assert patience() == DEFAULT_PATIENCE
    assert budget(10) == 10 * DEFAULT_PATIENCE
    monkeypatch.setenv(PATIENCE_ENV, "0.5")
    assert budget(10) == 5
    assert 4.9 < deadline(10).left() <= 5


@pytest.mark.parametrize("raw", ["0", "-1", "slow", "nan", "inf"])
def test_a_bad_patience_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(PATIENCE_ENV, raw)
    with pytest.raises(ValueError, match=PATIENCE_ENV):
        patience()


async def test_eventually_waits_the_scaled_time_then_names_the_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PATIENCE_ENV, "0.02")  # 5 s nominal: 0.1 s
    calls = 0

    def never() -> bool:
        nonlocal calls
        calls += 1
        return False

    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"within 0.1s: still 0"):
        await eventually(never, within=5, interval=0.01, failure=lambda: "still 0")
    assert time.monotonic() - started >= 0.1
    assert calls >= 2  # it looked again after the first miss


async def test_eventually_returns_once_an_async_check_holds() -> None:
    seen: list[int] = []

    async def third_time() -> bool:
        seen.append(1)
        return len(seen) >= 3

    await eventually(third_time, within=5, interval=0)
    assert len(seen) == 3


async def test_an_error_in_the_check_ends_the_wait_at_once() -> None:
    def dead() -> bool:
        raise AssertionError("the process exited")

    started = time.monotonic()
    with pytest.raises(AssertionError, match="the process exited"):
        await eventually(dead, within=60)
    assert time.monotonic() - started < 30  # not the whole budget


def test_eventually_sync_and_deadline_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PATIENCE_ENV, "0.01")
    with pytest.raises(AssertionError, match="never"):
        eventually_sync(lambda: False, within=5, interval=0.01, failure="never")
    until = deadline(1)
    until.check("fine")  # not passed yet
    time.sleep(0.02)
    with pytest.raises(AssertionError, match=r"the thing not within 0.01s"):
        until.check("the thing")
