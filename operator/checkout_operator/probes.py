"""The operator's HTTP port: ``/metrics``, and the probes ``/healthz`` and ``/readyz``.

``/readyz`` answers 503 (with each problem) while a supervised loop of the acting
operator is down, waiting to be started again. A standby instance (not leading) has
no loops and is ready: a rollout must be able to start the successor beside it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from saga_kit.supervise import Readiness

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def probes_app(readiness: Readiness) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        problems = readiness.problems() if path == "/readyz" else {}
        body = {"status": "not ready", "problems": problems} if problems else {"status": "ok"}
        start_response(
            "503 Service Unavailable" if problems else "200 OK",
            [("Content-Type", "application/json")],
        )
        return [json.dumps(body).encode()]

    return app


def serve_probes(port: int, readiness: Readiness, addr: str = "0.0.0.0") -> None:  # noqa: S104
    """Serve metrics and probes from a daemon thread (as prometheus_client does)."""
    server = make_server(addr, port, probes_app(readiness), ThreadingWSGIServer, _SilentHandler)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
