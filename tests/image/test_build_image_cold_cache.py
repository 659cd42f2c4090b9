"""scripts/build-image on a machine whose cache is empty (CI's cold machine).

Red before: it made its debootstrap directory inside ``$CACHE/image`` before creating
that directory, so a cold cache failed with mktemp's "No such file or directory" and
the node stage's image tests all errored. Here ``podman`` and ``debootstrap`` are
stand-ins on ``PATH`` (no base image yet; debootstrap fails at once), so the script is
followed up to its first use of the cache in a second, on any machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # no server, no podman: runs in the main suite

ROOT = Path(__file__).resolve().parents[2]

STANDIN = '#!/bin/sh\necho "$0 $*" >> "$CALLS"\nexit 1\n'


def test_a_cold_cache_gets_as_far_as_debootstrap(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("podman", "debootstrap"):
        (bin_dir / tool).write_text(STANDIN)
        (bin_dir / tool).chmod(0o755)
    cache = tmp_path / "cold-cache"  # does not exist yet
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CHECKOUT_SAGA_CACHE": str(cache),
        "CALLS": str(tmp_path / "calls"),
    }
    env.pop("BASE_IMAGE", None)
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-image")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode != 0  # the stand-in debootstrap fails
    assert "No such file or directory" not in result.stderr, result.stderr
    assert "debootstrap failed" in result.stderr, result.stderr
    calls = (tmp_path / "calls").read_text()
    assert "debootstrap --variant=minbase" in calls
    assert not list((cache / "image").glob("rootfs.*"))  # the failed attempt cleaned up
