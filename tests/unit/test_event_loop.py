"""Every process runs on uvloop unless told otherwise (issue 12: the apps' own CPU per
paid checkout; saga_kit.event_loop), and a bad SAGA_EVENT_LOOP stops it at start."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
from pathlib import Path

import pytest
import uvloop

from saga_kit import event_loop
from saga_kit.settings import ConfigError

from .test_app_imports import ENTRY_MODULES


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_the_default_loop_is_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGA_EVENT_LOOP", raising=False)
    assert event_loop.run(_loop_type()) is uvloop.Loop


def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGA_EVENT_LOOP", "asyncio")
    assert not issubclass(event_loop.run(_loop_type()), uvloop.Loop)


def test_an_unknown_loop_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGA_EVENT_LOOP", "trio")
    coroutine = _loop_type()
    with pytest.raises(ConfigError, match="SAGA_EVENT_LOOP must be one of uvloop, asyncio"):
        event_loop.run(coroutine)
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED  # not "never awaited"


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_no_entry_module_starts_the_standard_loop_itself(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    calls = [
        f"{node.func.value.id}.{node.func.attr} (line {node.lineno})"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "asyncio"
        and node.func.attr in ("run", "new_event_loop")
    ]
    assert calls == [], f"{module} makes its own loop: {calls}; use saga_kit.event_loop"
