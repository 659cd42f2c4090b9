"""Sandbox settings, read from the environment.

The time scale is what makes the sandbox usable in tests: it multiplies every delay the
sandbox waits for (Snap expiry durations and the notification retry schedule), so a scale of
0.001 turns Midtrans' 2-minute first retry into 0.12 s. The receiver timeout is deliberately
not scaled: it bounds how long a real HTTP answer may take, which does not shrink in tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18900
DEFAULT_MERCHANT_ID = "G000000000"
NOTIFICATION_TIMEOUT_SECONDS = 15.0
# Midtrans' wording for a reused order_id is uncertain and so is its HTTP status; the sandbox
# answers 409 by default (a 4xx, as documented) and lets tests pick another 4xx such as 400.
DEFAULT_DUPLICATE_STATUS = 409
IN_MEMORY = ":memory:"


@dataclass(frozen=True)
class SandboxSettings:
    """How the sandbox behaves; the server key never appears in ``repr()``."""

    server_key: str = field(repr=False)
    notification_url: str | None = None
    time_scale: float = 1.0
    merchant_id: str = DEFAULT_MERCHANT_ID
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    notification_timeout: float = NOTIFICATION_TIMEOUT_SECONDS
    duplicate_order_status: int = DEFAULT_DUPLICATE_STATUS
    # Where the orders are kept (SQLite); ":memory:" forgets them when the process ends.
    state_file: str = IN_MEMORY

    def __post_init__(self) -> None:
        if not self.server_key:
            raise ValueError("MIDTRANS_SANDBOX_SERVER_KEY is required")
        if not self.time_scale > 0:
            raise ValueError(f"time scale must be > 0, got {self.time_scale}")
        if not 400 <= self.duplicate_order_status < 500:
            raise ValueError("the duplicate order_id status must be a 4xx")

    def scaled(self, seconds: float) -> float:
        """A Midtrans delay as the sandbox waits it."""
        return seconds * self.time_scale

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxSettings:
        env = os.environ if environ is None else environ
        return cls(
            server_key=env.get("MIDTRANS_SANDBOX_SERVER_KEY", ""),
            notification_url=env.get("MIDTRANS_SANDBOX_NOTIFICATION_URL") or None,
            time_scale=float(env.get("MIDTRANS_SANDBOX_TIME_SCALE") or 1.0),
            merchant_id=env.get("MIDTRANS_SANDBOX_MERCHANT_ID") or DEFAULT_MERCHANT_ID,
            host=env.get("MIDTRANS_SANDBOX_HOST") or DEFAULT_HOST,
            port=int(env.get("MIDTRANS_SANDBOX_PORT") or DEFAULT_PORT),
            duplicate_order_status=int(
                env.get("MIDTRANS_SANDBOX_DUPLICATE_STATUS") or DEFAULT_DUPLICATE_STATUS
            ),
            state_file=env.get("MIDTRANS_SANDBOX_STATE_FILE") or IN_MEMORY,
        )
