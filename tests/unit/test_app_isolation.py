"""e2e runs only against apps started from this checkout's code (saga_devenv.apps)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from saga_devenv import apps
from saga_devenv.config import DevConfig
from saga_devenv.process import Daemon

ENV = {"SETTING": "same"}


def _tree(root: Path) -> Path:
    for base in apps.SOURCE_ROOTS:
        (root / base / "pkg").mkdir(parents=True)
        (root / base / "pkg" / "mod.py").write_text("X = 1\n")
    return root


def test_fingerprint_follows_every_source_file_and_the_checkout(tmp_path: Path) -> None:
    root = _tree(tmp_path / "a")
    first = apps.code_fingerprint(root)
    assert apps.code_fingerprint(root) == first
    for base in apps.SOURCE_ROOTS:
        source = root / base / "pkg" / "mod.py"
        source.write_text("X = 2\n")
        assert apps.code_fingerprint(root) != first, base
        source.write_text("X = 1\n")
    assert apps.code_fingerprint(root) == first
    (root / "services" / "pkg" / "__pycache__").mkdir()
    (root / "services" / "pkg" / "__pycache__" / "mod.pyc").write_bytes(b"\0")
    assert apps.code_fingerprint(root) == first  # bytecode is not code under test
    shutil.copytree(root, tmp_path / "b")
    assert apps.code_fingerprint(tmp_path / "b") != first  # another checkout


@pytest.fixture
def stand_ins(tmp_path: Path) -> Iterator[tuple[DevConfig, list[Daemon]]]:
    """Each app's pidfile and stamp pointing at a live process, as `apps.start` leaves them."""
    cfg = dataclasses.replace(DevConfig.from_env(), run_dir=tmp_path)
    daemons = [apps._daemon(cfg, app, ENV, "code-under-test") for app in apps.APPS]
    procs = [subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)]
    for daemon in daemons:
        daemon.pidfile.write_text(f"{procs[0].pid}\n")
        daemon.stampfile.write_text(daemon.stamp + "\n")
    yield cfg, daemons
    for proc in procs:
        proc.kill()
        proc.wait()


def test_apps_started_from_other_code_are_named(
    stand_ins: tuple[DevConfig, list[Daemon]],
) -> None:
    cfg, daemons = stand_ins
    assert apps.outdated(daemons) == []
    edited = [apps._daemon(cfg, app, ENV, "edited-code") for app in apps.APPS]
    assert apps.outdated(edited) == [app.name for app in apps.APPS]


def test_a_stale_or_stopped_app_is_named(stand_ins: tuple[DevConfig, list[Daemon]]) -> None:
    cfg, daemons = stand_ins
    stale, stopped = daemons[1], daemons[3]
    stale.stampfile.write_text(apps._daemon(cfg, apps.APPS[1], ENV, "older-code").stamp + "\n")
    stopped.pidfile.unlink()
    assert apps.outdated(daemons) == [stale.name, stopped.name]
    # What `start` does with it: a daemon whose stamp differs is stale, so restarted.
    assert stale.stale()
