"""No app process loads the kubernetes clients (issue 12: kubernetes_asyncio alone is
~60 MiB of RSS, ~770 generated model modules; the apps talk to the apiserver through
saga_kit.apiserver). Each entry module is imported in a fresh interpreter, as its
process would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ENTRY_MODULES = (
    "checkout_operator.__main__",
    "checkout_api.__main__",
    "payment_listener.__main__",
    "checkout_operator.worker",
    "user_service.__main__",  # through saga_kit.problems
    "product_service.__main__",
)
HEAVY = ("kubernetes_asyncio", "kubernetes")

PROBE = """
import importlib, json, resource, sys
importlib.import_module(sys.argv[1])
print(json.dumps({
    "loaded": [m for m in sys.argv[2:] if m in sys.modules],
    "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
}))
"""


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_an_app_imports_no_kubernetes_client(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, module, *HEAVY],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["loaded"] == [], (
        f"{module} loads {found['loaded']}: {found['maxrss_mib']} MiB max RSS after import"
    )
