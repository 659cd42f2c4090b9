"""``python -m midtrans_sandbox``: serve the sandbox with uvicorn.

Host and port come from MIDTRANS_SANDBOX_HOST / MIDTRANS_SANDBOX_PORT (127.0.0.1:18900);
the server key (MIDTRANS_SANDBOX_SERVER_KEY) is required, see :mod:`midtrans_sandbox.settings`.
SIGTERM shuts it down gracefully and exits 0; a missing or invalid setting exits 2.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import uvicorn

from midtrans_sandbox.app import create_app
from midtrans_sandbox.settings import SandboxSettings


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn captures SIGTERM, shuts down gracefully (lifespan: background tasks cancelled),
    # restores this handler and raises the signal again. Stopping is the normal end of the
    # sandbox, so it ends with status 0 instead of death by SIGTERM. Before uvicorn takes
    # over, the same handler simply exits.
    raise SystemExit(0)


def main() -> int:
    try:
        settings = SandboxSettings.from_env()
        app = create_app(settings)  # opens the state file
    except ValueError as exc:
        print(f"midtrans_sandbox: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger(__name__).info("starting with %r", settings)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
