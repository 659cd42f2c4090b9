"""The sandbox's HTTP face: Snap, Core API and the ``/_sandbox`` control API in one app.

The project's Midtrans client points both its Snap and its Core API base URL here. Snap and
Core API paths need the server key (Basic auth, key as user, empty password), as at
Midtrans; the control API acts as the customer (choose a payment method, pay, ...) and as a
test probe, so it needs no key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from midtrans.notification_urls import APPEND_HEADER, OVERRIDE_HEADER
from midtrans_sandbox.engine import Reply, Sandbox
from midtrans_sandbox.settings import SandboxSettings

UNAUTHORIZED_MESSAGE = (
    "Access denied due to unauthorized transaction, please check client or server key"
)
# Paths that belong to Midtrans' own APIs (and so need the server key).
PROTECTED_PREFIXES = ("/snap/v1/", "/v2/")


def _authorized(request: Request, server_key: str) -> bool:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(user.encode("utf-8"), server_key.encode("utf-8"))


class ServerKeyRequired:
    """Snap and Core API paths answer 401 without the server key, as at Midtrans.

    Plain ASGI: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``) runs each
    request through a task group and a streamed response, a tenth of the sandbox's CPU.
    """

    def __init__(self, app: ASGIApp, server_key: str) -> None:
        self._app = app
        self._server_key = server_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED_PREFIXES):
            request = Request(scope)
            if not _authorized(request, self._server_key):
                body = {
                    "status_code": "401",
                    "status_message": UNAUTHORIZED_MESSAGE,
                    "error_messages": [UNAUTHORIZED_MESSAGE],
                }
                await JSONResponse(body, status_code=401)(scope, receive, send)
                return
        await self._app(scope, receive, send)


def _json(reply: Reply) -> JSONResponse:
    return JSONResponse(reply.body, status_code=reply.http_status)


async def _optional_json(request: Request) -> dict[str, Any]:
    """A control call's optional JSON body ({} when empty or not JSON, e.g. an HTML form)."""
    raw = await request.body()
    if not raw or "json" not in request.headers.get("content-type", "json"):
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _text_field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) and value else None


def create_app(
    settings: SandboxSettings,
    *,
    notification_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The sandbox app; ``notification_transport`` lets in-process tests catch notifications.

    Background work (expiry, notification retries) starts and stops with the app's lifespan.
    """
    sandbox = Sandbox(settings, notification_transport=notification_transport)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await sandbox.start()
        try:
            yield
        finally:
            await sandbox.aclose()

    app = FastAPI(title="Midtrans sandbox", lifespan=lifespan, docs_url="/_sandbox/docs")
    app.state.sandbox = sandbox

    app.add_middleware(ServerKeyRequired, server_key=settings.server_key)

    # --- Snap -----------------------------------------------------------------------------

    @app.post("/snap/v1/transactions")
    async def create_transaction(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error_messages": ["the body is not valid JSON"]}, 400)
        return _json(
            await sandbox.create_snap(
                body,
                str(request.base_url),
                override_notification=request.headers.get(OVERRIDE_HEADER),
                append_notification=request.headers.get(APPEND_HEADER),
            )
        )

    @app.get("/snap/v3/redirection/{token}", response_class=HTMLResponse)
    async def payment_page(token: str) -> HTMLResponse:
        # A bare stand-in for Snap's hosted page, for demos: buttons call the control API.
        order = await sandbox.order_for_token(token)
        if order is None:
            return HTMLResponse("<h1>Unknown or expired payment link</h1>", status_code=404)
        order_id = html.escape(order["order_id"])
        buttons = "".join(
            f'<form method="post" action="/_sandbox/transactions/{order_id}/{action}">'
            f'<button type="submit">{label}</button></form>'
            for action, label in (("pay", "Pay (bank transfer)"), ("deny", "Deny"))
        )
        return HTMLResponse(
            f"<h1>Order {order_id}</h1><p>IDR {order['gross_amount']}, "
            f"status: {html.escape(str(order['transaction_status']))}</p>{buttons}"
        )

    # --- Core API -------------------------------------------------------------------------

    @app.get("/v2/{order_id}/status")
    async def status(order_id: str) -> JSONResponse:
        return _json(await sandbox.status(order_id))

    @app.post("/v2/{order_id}/cancel")
    async def cancel(order_id: str) -> JSONResponse:
        return _json(await sandbox.cancel(order_id))

    @app.post("/v2/{order_id}/expire")
    async def expire(order_id: str) -> JSONResponse:
        return _json(await sandbox.expire(order_id))

    @app.post("/v2/{order_id}/refund")
    async def refund(order_id: str, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        return _json(await sandbox.refund(order_id, body))

    # --- control API (acting as the customer) ---------------------------------------------

    @app.get("/_sandbox/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/_sandbox/transactions/{order_id}")
    async def snapshot(order_id: str) -> JSONResponse:
        return _json(await sandbox.snapshot(order_id))

    @app.post("/_sandbox/transactions/{order_id}/choose")
    async def choose(order_id: str, request: Request) -> JSONResponse:
        body = await _optional_json(request)
        return _json(await sandbox.choose(order_id, _text_field(body, "payment_type")))

    @app.post("/_sandbox/transactions/{order_id}/pay")
    async def pay(order_id: str, request: Request) -> JSONResponse:
        body = await _optional_json(request)
        return _json(
            await sandbox.pay(
                order_id, _text_field(body, "payment_type"), _text_field(body, "fraud")
            )
        )

    @app.post("/_sandbox/transactions/{order_id}/deny")
    async def deny(order_id: str) -> JSONResponse:
        return _json(await sandbox.deny(order_id))

    @app.post("/_sandbox/transactions/{order_id}/expire")
    async def expire_now(order_id: str) -> JSONResponse:
        return _json(await sandbox.expire_now(order_id))

    @app.post("/_sandbox/transactions/{order_id}/force-settle")
    async def force_settle(order_id: str) -> JSONResponse:
        return _json(await sandbox.force_settle(order_id))

    @app.post("/_sandbox/transactions/{order_id}/force-capture")
    async def force_capture(order_id: str, request: Request) -> JSONResponse:
        body = await _optional_json(request)
        return _json(await sandbox.force_capture(order_id, _text_field(body, "fraud")))

    @app.post("/_sandbox/transactions/{order_id}/refuse-refunds")
    async def refuse_refunds(order_id: str, request: Request) -> JSONResponse:
        body = await _optional_json(request)
        return _json(await sandbox.refuse_refunds(order_id, body.get("refuse", True) is not False))

    return app
