"""HTTP face of the listener: ``POST /midtrans/notifications``."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from nats.js import JetStreamContext

from midtrans import TransactionStatus, verify_signature
from saga_kit.events import Topology

log = logging.getLogger(__name__)

REQUIRED = ("order_id", "status_code", "gross_amount", "signature_key", "transaction_status")
MAX_BODY = 64 * 1024


def message_id(notification: dict[str, Any]) -> str:
    """Identical notifications (Midtrans retries, duplicates) share one id."""
    parts = [
        str(notification.get(k, ""))
        for k in (
            "order_id",
            "transaction_status",
            "status_code",
            "transaction_id",
            "fraud_status",
            "signature_key",
        )
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _error(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"reason": reason, "message": message})


def create_app(server_key: str, js: JetStreamContext | None, topology: Topology) -> FastAPI:
    app = FastAPI(
        title="Midtrans webhook listener",
        description="Receives Midtrans HTTP notifications for the checkout saga.",
        version="1",
    )
    app.state.js = js

    @app.post("/midtrans/notifications")
    async def notification(request: Request) -> JSONResponse:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _error(413, "TOO_LARGE", f"a notification is at most {MAX_BODY} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "MALFORMED", "the body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "MALFORMED", "the body is not a JSON object")
        missing = [k for k in REQUIRED if not isinstance(body.get(k), str) or not body.get(k)]
        if missing:
            return _error(400, "MISSING_FIELDS", f"missing or not a string: {', '.join(missing)}")
        if not verify_signature(body, server_key):
            log.warning("refused a notification for %s: bad signature", body["order_id"])
            return _error(401, "BAD_SIGNATURE", "signature_key does not verify")
        if not TransactionStatus.from_json(body).status_code_consistent:
            # The signature covers status_code, not transaction_status / fraud_status:
            # a status that does not go with its signed code was edited on the way.
            log.warning(
                "refused a notification for %s: status %s/%s does not go with status_code %s",
                body["order_id"],
                body["transaction_status"],
                body.get("fraud_status"),
                body["status_code"],
            )
            return _error(
                400,
                "INCONSISTENT_STATUS",
                "transaction_status and fraud_status do not go with the signed status_code",
            )
        jetstream: JetStreamContext | None = app.state.js
        if jetstream is None:
            return _error(503, "NOT_READY", "not connected to NATS yet; retry")
        try:
            ack = await jetstream.publish(
                topology.payment_subject,
                raw,
                stream=topology.payment_stream,
                headers={"Nats-Msg-Id": message_id(body)},
                timeout=5,
            )
        except Exception as exc:  # NATS down: let Midtrans retry later
            log.error("could not record notification for %s: %r", body["order_id"], exc)
            return _error(503, "NOT_RECORDED", "could not record the notification; retry")
        log.info(
            "recorded %s for %s (seq %s%s)",
            body["transaction_status"],
            body["order_id"],
            ack.seq,
            ", duplicate" if ack.duplicate else "",
        )
        return JSONResponse({"status": "recorded", "duplicate": bool(ack.duplicate)})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if app.state.js is None:
            return _error(503, "NOT_READY", "not connected to NATS")
        return JSONResponse({"status": "ready"})

    return app
