"""Where Midtrans lives and which key to use.

Switching between real Midtrans (sandbox or production) and the local ``midtrans_sandbox``
is only a matter of these values, so nothing else in the client may hard-code a URL. The
server key is a secret: it is kept out of ``repr()`` so that logging a config (or an object
holding one) can never leak it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from midtrans.notification_urls import parse_urls

SANDBOX_SNAP_URL = "https://app.sandbox.midtrans.com"
SANDBOX_CORE_URL = "https://api.sandbox.midtrans.com"
PRODUCTION_SNAP_URL = "https://app.midtrans.com"
PRODUCTION_CORE_URL = "https://api.midtrans.com"

DEFAULT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class MidtransConfig:
    """Server key, Snap and Core API base URLs, and the per-request timeout (seconds)."""

    server_key: str = field(repr=False)
    snap_base_url: str = SANDBOX_SNAP_URL
    core_base_url: str = SANDBOX_CORE_URL
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    # Sent as X-Override-Notification with each Snap request: where Midtrans notifies
    # about that transaction instead of the dashboard's URL (empty: the dashboard's).
    notification_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.server_key:
            raise ValueError("the Midtrans server key is empty")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.notification_urls:
            parse_urls(",".join(self.notification_urls), what="MIDTRANS_NOTIFICATION_URL")
        # Base URLs are joined with absolute paths ("/v2/..."): a trailing slash would double it.
        object.__setattr__(self, "snap_base_url", self.snap_base_url.rstrip("/"))
        object.__setattr__(self, "core_base_url", self.core_base_url.rstrip("/"))

    def __repr__(self) -> str:
        # Spelled out (rather than the dataclass default) so that the key stays hidden even if
        # someone later changes the field declaration.
        return (
            f"MidtransConfig(server_key=<hidden>, snap_base_url={self.snap_base_url!r}, "
            f"core_base_url={self.core_base_url!r}, timeout={self.timeout!r}, "
            f"notification_urls={self.notification_urls!r})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MidtransConfig:
        """Read MIDTRANS_SERVER_KEY (required), MIDTRANS_SNAP_URL, MIDTRANS_CORE_URL and
        MIDTRANS_NOTIFICATION_URL (up to 3 comma-separated URLs)."""
        env = os.environ if environ is None else environ
        key = env.get("MIDTRANS_SERVER_KEY", "")
        if not key:
            raise ValueError("MIDTRANS_SERVER_KEY is not set")
        return cls(
            server_key=key,
            snap_base_url=env.get("MIDTRANS_SNAP_URL") or SANDBOX_SNAP_URL,
            core_base_url=env.get("MIDTRANS_CORE_URL") or SANDBOX_CORE_URL,
            notification_urls=parse_urls(
                env["MIDTRANS_NOTIFICATION_URL"], what="MIDTRANS_NOTIFICATION_URL"
            )
            if env.get("MIDTRANS_NOTIFICATION_URL")
            else (),
        )
