"""The operator's probes: a supervised loop that fails makes /readyz 503 until it is back."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from wsgiref.util import setup_testing_defaults

from checkout_operator.__main__ import _supervised
from checkout_operator.probes import probes_app
from saga_kit.supervise import Readiness


def get(app: Any, path: str) -> tuple[str, dict[str, Any] | bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    seen: list[str] = []
    body = b"".join(app(environ, lambda status, headers: seen.append(status)))
    return seen[0], (json.loads(body) if path != "/metrics" else body)


async def test_a_failing_loop_is_restarted_and_not_ready_meanwhile() -> None:
    readiness = Readiness()
    app = probes_app(readiness)
    assert get(app, "/readyz")[0] == "200 OK"  # a standby has no loops: ready
    stop = asyncio.Event()
    runs: list[int] = []
    release = asyncio.Event()

    async def loop() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ConnectionError("journal away")
        await release.wait()  # the second run works until told to stop
        await stop.wait()

    task = asyncio.create_task(_supervised("poller", loop, stop, readiness))
    for _ in range(100):
        status, body = get(app, "/readyz")
        if status.startswith("503"):
            break
        await asyncio.sleep(0.01)
    assert status.startswith("503") and isinstance(body, dict)
    assert "journal away" in body["problems"]["poller"]
    assert get(app, "/healthz")[0] == "200 OK"  # alive all along
    for _ in range(300):  # the first restart comes after 0.5 s
        if len(runs) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(runs) == 2 and get(app, "/readyz")[0] == "200 OK"
    assert b"checkout_" in get(app, "/metrics")[1]
    release.set()
    stop.set()
    await asyncio.wait_for(task, 5)
