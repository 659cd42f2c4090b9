"""HTTP face of the listener: ``POST /midtrans/notifications``.

A notification that passes the checks here (size, shape, signature, a status that goes
with its signed code) and says "paid" is settled on the Checkout itself when Midtrans'
status API confirms it (``settling``). Every notification is then recorded on
JetStream: the operator's inbox applies what the listener did not (and checks what it
did), and the stream is the audit trail. The answer is 2xx only once the change is
durable: written to the apiserver, or recorded.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Literal

from fastapi import FastAPI, Request
from nats.js import JetStreamContext
from pydantic import BaseModel

from midtrans import TransactionStatus, verify_signature
from midtrans.client import validate_order_id
from saga_kit import problems
from saga_kit.events import Topology
from saga_kit.problems import ProblemError
from saga_kit.request_bodies import MALFORMED, BodyLimit, parse_json

from .settling import Outcome, Settler, claims_payment

log = logging.getLogger(__name__)

REQUIRED = ("order_id", "status_code", "gross_amount", "signature_key", "transaction_status")
MAX_BODY = 64 * 1024
RETRY = {"Retry-After": str(problems.RETRY_AFTER_SECONDS)}
ERRORS = problems.responses(
    {
        400: "MALFORMED (not a JSON object), MISSING_FIELDS or INCONSISTENT_STATUS",
        401: "BAD_SIGNATURE: signature_key does not verify",
        413: "BODY_TOO_LARGE",
        422: "INVALID_REQUEST: a string holds U+0000 or a lone surrogate",
        503: "NOT_READY or NOT_RECORDED: retry (Midtrans does)",
    }
)


class Recorded(BaseModel):
    # settled: the listener wrote the Checkout Settled (Midtrans confirmed the payment);
    # recorded: on JetStream for the operator to apply.
    status: Literal["settled", "recorded"] = "recorded"
    recorded: bool = True
    duplicate: bool = False


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


def create_app(
    server_key: str,
    js: JetStreamContext | None,
    topology: Topology,
    settler: Settler | None = None,
) -> FastAPI:
    """``settler`` None: record only, never write a Checkout (LISTENER_SETTLES=false)."""
    app = FastAPI(
        title="Midtrans webhook listener",
        description="Receives Midtrans HTTP notifications for the checkout saga.",
        version="1",
    )
    app.state.js = js

    @app.post(
        "/midtrans/notifications",
        response_model=Recorded,
        tags=["midtrans"],
        responses=ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def notification(request: Request) -> Recorded:
        raw = await request.body()  # at most MAX_BODY: BodyLimit refuses more
        body = parse_json(raw)
        if not isinstance(body, dict):
            raise ProblemError(400, MALFORMED, "the body is not a JSON object")
        missing = [k for k in REQUIRED if not isinstance(body.get(k), str) or not body.get(k)]
        if missing:
            raise ProblemError(
                400, "MISSING_FIELDS", f"missing or not a string: {', '.join(missing)}"
            )
        if not verify_signature(body, server_key):
            log.warning("refused a notification for %s: bad signature", body["order_id"])
            raise ProblemError(401, "BAD_SIGNATURE", "signature_key does not verify")
        hint = TransactionStatus.from_json(body)
        if not hint.status_code_consistent:
            # The signature covers status_code, not transaction_status / fraud_status:
            # a status that does not go with its signed code was edited on the way.
            log.warning(
                "refused a notification for %s: status %s/%s does not go with status_code %s",
                body["order_id"],
                body["transaction_status"],
                body.get("fraud_status"),
                body["status_code"],
            )
            raise ProblemError(
                400,
                "INCONSISTENT_STATUS",
                "transaction_status and fraud_status do not go with the signed status_code",
            )
        settled = settler is not None and await _settle(settler, hint)
        jetstream: JetStreamContext | None = app.state.js
        if jetstream is None:
            if settled:
                return Recorded(status="settled", recorded=False)
            raise ProblemError(503, "NOT_READY", "not connected to NATS yet; retry", headers=RETRY)
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
            if settled:  # durable already: the apiserver holds it
                return Recorded(status="settled", recorded=False)
            raise ProblemError(
                503, "NOT_RECORDED", "could not record the notification; retry", headers=RETRY
            ) from exc
        log.info(
            "recorded %s for %s (seq %s%s)",
            body["transaction_status"],
            body["order_id"],
            ack.seq,
            ", duplicate" if ack.duplicate else "",
        )
        return Recorded(status="settled" if settled else "recorded", duplicate=bool(ack.duplicate))

    @app.get("/healthz", tags=["probes"], responses=problems.responses({}))
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz", tags=["probes"], responses=problems.responses({503: "NOT_READY: no NATS yet"})
    )
    async def readyz() -> dict[str, str]:
        if app.state.js is None:
            raise ProblemError(503, "NOT_READY", "not connected to NATS", headers=RETRY)
        return {"status": "ready"}

    problems.install(app)
    app.state.settler = settler
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    return app


async def _settle(settler: Settler, hint: TransactionStatus) -> bool:
    """Settle the Checkout if the notification says paid and Midtrans confirms it."""
    if not claims_payment(hint):
        return False
    try:
        validate_order_id(hint.order_id)
    except ValueError:
        return False  # the operator's inbox drops it too
    result = await settler.settle(hint.order_id)
    if result.outcome is Outcome.SETTLED:
        log.info("settled %s: Midtrans confirms the payment", hint.order_id)
    elif result.outcome is Outcome.UNREACHABLE:
        log.warning("not settled here (%s): %s: left to the operator", result.why, hint.order_id)
    else:
        log.info("not settled here: %s: %s", hint.order_id, result.why)
    return result.outcome is Outcome.SETTLED
