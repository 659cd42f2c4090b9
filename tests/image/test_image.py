"""The image from the Dockerfile, built the way the node stage builds it (scripts/build-image):
it carries what the processes read at run time, runs as non-root on a read-only root
filesystem, and holds exactly the locked packages."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY_MODULES = (
    "checkout_operator",
    "checkout_operator.worker",
    "user_service",
    "product_service",
    "checkout_api",
    "payment_listener",
    "midtrans_sandbox",
)
PROBE = """
import importlib, importlib.resources as r, json, os
for m in {modules!r}:
    importlib.import_module(m + ".__main__" if m != "checkout_operator.worker" else m)
migrations = sorted(
    pkg + "/" + p.name
    for pkg in ("checkout_operator", "user_service", "product_service")
    for p in (r.files(pkg) / "migrations").iterdir()
)
try:
    open("/opt/checkout-saga/probe", "w")
    writable = True
except OSError:
    writable = False
print(json.dumps({{"uid": os.getuid(), "migrations": migrations, "writable": writable}}))
"""

LIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")

pytestmark = [pytest.mark.node, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def image() -> str:
    built = subprocess.run(
        [str(ROOT / "scripts" / "build-image")], capture_output=True, text=True, timeout=840
    )
    assert built.returncode == 0, built.stderr
    return built.stdout.strip().splitlines()[-1]


def run(image: str, *argv: str) -> str:
    sandboxed = ("--rm", "--read-only", "--network", "none", *LIMITS)
    result = subprocess.run(
        ["podman", "run", *sandboxed, "--entrypoint", argv[0], image, *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_image_runs_every_process_as_non_root_read_only_with_its_migrations(image: str) -> None:
    probe = json.loads(run(image, "python", "-c", PROBE.format(modules=ENTRY_MODULES)))
    assert probe["uid"] == 10001
    assert not probe["writable"]
    in_source = sorted(
        f"{p.parent.parent.name}/{p.name}"
        for p in ROOT.glob("*/*/migrations/*.sql")
        if p.parent.parent.name in ("checkout_operator", "user_service", "product_service")
    )
    assert in_source and probe["migrations"] == in_source


def test_image_holds_exactly_the_locked_packages(image: str) -> None:
    locked = {
        name.lower().replace("_", "-"): version
        for name, version in re.findall(
            r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "requirements.lock").read_text(), re.M
        )
    }
    frozen = run(image, "pip", "freeze", "--exclude-editable")
    installed = dict(
        line.lower().replace("_", "-").split("==", 1)
        for line in frozen.splitlines()
        if "==" in line and not line.lower().startswith("checkout-saga")
    )
    assert installed, frozen
    wrong = {n: (v, locked.get(n)) for n, v in installed.items() if locked.get(n) != v}
    assert not wrong, f"installed (version, locked version) differ: {wrong}"
