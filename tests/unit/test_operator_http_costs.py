"""The operator's HTTP client costs: the missing optional ``sniffio`` is remembered so
httpcore stops searching sys.path for it on every Midtrans request, and httpx's line per
request shows at DEBUG only (see checkout_operator.__main__)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib.util, sys
missing = importlib.util.find_spec("sniffio") is None
import checkout_operator.__main__
from httpcore._synchronization import current_async_library
import asyncio

async def library():
    return current_async_library()

assert asyncio.run(library()) == "asyncio"
print(missing, "sniffio" in sys.modules and sys.modules["sniffio"] is None)
"""


def test_a_missing_sniffio_is_remembered_and_httpcore_still_runs_on_asyncio() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=60
    )
    missing, remembered = done.stdout.split()
    assert remembered == missing  # remembered as missing exactly when it is


def test_http_request_lines_show_at_debug_only() -> None:
    check = """
import logging, sys
from saga_kit.logs import setup_logging
from checkout_operator.__main__ import quiet_http_requests
setup_logging("t", sys.argv[1])
quiet_http_requests()
print(logging.getLogger("httpx").isEnabledFor(logging.INFO))
"""
    for level, shown in (("INFO", "False"), ("DEBUG", "True")):
        done = subprocess.run(
            [sys.executable, "-c", check, level], capture_output=True, text=True, check=True
        )
        assert done.stdout.split()[-1] == shown, level
