"""Log lines: JSON with the order id as a field, plain text on request, secrets masked."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from saga_kit.logs import about_order, setup_logging


@pytest.fixture
def restore_root() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_lines_about_an_order_carry_its_id_even_in_tasks_started_inside(
    restore_root: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    setup_logging("test-service")
    log = logging.getLogger("saga.test")

    async def step() -> None:
        log.info("reserving with Bearer abc.def.ghi")

    async def main() -> None:
        with about_order("order-42"):
            await asyncio.create_task(step())
        log.info("idle")

    asyncio.run(main())
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["order_id"] == "order-42" and first["service"] == "test-service"
    assert "abc.def.ghi" not in first["msg"]
    assert "order_id" not in second


def test_text_format_on_request_and_bad_settings_refused(
    restore_root: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "text")
    monkeypatch.setenv("LOG_LEVEL", "warning")
    setup_logging("test-service")
    with about_order("order-7"):
        logging.getLogger("saga.test").info("hidden below WARNING")
        logging.getLogger("saga.test").warning("refund refused")
    out = capsys.readouterr().out
    assert "hidden" not in out and "[order-7]: refund refused" in out
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        setup_logging("test-service")
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        setup_logging("test-service")
