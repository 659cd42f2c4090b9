"""Run the Midtrans sandbox in-process for tests and catch its notifications.

The app runs on ``httpx.ASGITransport`` with its lifespan entered by hand (the transport does
not run it), so the expiry task and notification retries work as in the real server. The
notifications go to a :class:`Receiver` through ``httpx.MockTransport``: it answers with
scripted HTTP statuses (or transport errors) and records every request with its arrival time.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from midtrans_sandbox import SandboxSettings, create_app
from tests.helpers.waiting import eventually as eventually  # the sandbox tests wait with it

SERVER_KEY = "SB-Mid-server-test-key-0123456789"
BASE_URL = "http://sandbox.test"
NOTIFICATION_URL = "http://receiver.test/midtrans/notifications"
CONNECT_ERROR = -1  # scripted "status": the receiver cannot be reached


@dataclass
class Received:
    at: float  # time.monotonic() on arrival
    headers: httpx.Headers
    payload: dict[str, Any]
    url: str = NOTIFICATION_URL


@dataclass
class Receiver:
    """Answers notifications with ``script`` (per order, in order; then 200) and records them."""

    script: dict[str, list[int]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.content)
        self.received.append(Received(time.monotonic(), request.headers, payload, str(request.url)))
        answers = self.script.get(payload["order_id"], [])
        status = answers.pop(0) if answers else 200
        if status == CONNECT_ERROR:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(status, json={"ok": 200 <= status < 300})

    def for_order(self, order_id: str) -> list[Received]:
        return [r for r in self.received if r.payload["order_id"] == order_id]


def settings(**overrides: Any) -> SandboxSettings:
    values: dict[str, Any] = {
        "server_key": SERVER_KEY,
        "notification_url": NOTIFICATION_URL,
        "time_scale": 0.001,
    }
    values.update(overrides)
    return SandboxSettings(**values)


@contextlib.asynccontextmanager
async def running_sandbox(
    sandbox_settings: SandboxSettings, receiver: Receiver
) -> AsyncIterator[httpx.ASGITransport]:
    """The sandbox app, started (lifespan) and reachable through the yielded transport."""
    app = create_app(sandbox_settings, notification_transport=httpx.MockTransport(receiver.handle))
    async with app.router.lifespan_context(app):
        yield httpx.ASGITransport(app=app)
