"""An asyncio Midtrans client: Snap token creation and the Core API status/cancel/expire/refund.

Midtrans reports outcomes twice: in the HTTP status and in the body's ``status_code`` (an
HTTP 200 may carry ``"status_code": "412"``). Every answer is therefore checked on both, the
way the official clients do: body codes >= 400 raise, except 407 (the normal answer of
``expire`` and the status of an expired transaction). A status 404 whose body says the
transaction does not exist is the normal state of a Snap order before the customer picks a
payment method, so :meth:`MidtransClient.status` returns None for it instead of raising; any
other 404 (a wrong base URL, say) still raises.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TypeGuard
from urllib.parse import quote

import httpx

from midtrans.config import MidtransConfig
from midtrans.errors import (
    MidtransClientError,
    MidtransConflict,
    MidtransError,
    MidtransServerError,
)
from midtrans.models import ItemDetail, SnapToken, TransactionStatus
from midtrans.notification_urls import OVERRIDE_HEADER
from midtrans.transport import AiohttpTransport

log = logging.getLogger(__name__)

ORDER_ID_MAX_LENGTH = 50
# Midtrans puts the order id into URL paths; these are the characters it accepts.
ORDER_ID_PATTERN = re.compile(r"^[A-Za-z0-9\-_~.]+$")
CUSTOM_FIELD_MAX_LENGTH = 255
MAX_CUSTOM_FIELDS = 3

# Body status codes that are answers, not failures (see the module docstring).
ACCEPTED_BODY_CODES = frozenset({407})
# How a reused order_id is reported is not documented precisely, so recognise all known forms:
# the local sandbox's wording, Snap's Indonesian message and Core API's 406 "Duplicate order ID".
CONFLICT_MARKERS = (
    "has already been taken",
    "sudah digunakan",
    "duplicate order id",
    "has already been utilized",
)
CONFLICT_BODY_CODES = frozenset({406})


def validate_order_id(order_id: str) -> str:
    """Refuse order ids Midtrans would refuse, before they end up in a URL path."""
    if not order_id or len(order_id) > ORDER_ID_MAX_LENGTH:
        raise ValueError(f"order_id must have 1..{ORDER_ID_MAX_LENGTH} characters")
    if not ORDER_ID_PATTERN.fullmatch(order_id):
        raise ValueError(f"order_id {order_id!r} may only hold letters, digits and -_~.")
    return order_id


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _body_code(body: Mapping[str, Any] | None) -> int | None:
    if body is None:
        return None
    try:
        return int(str(body.get("status_code")))
    except ValueError:
        return None


def _messages(body: Mapping[str, Any] | None, response: httpx.Response) -> list[str]:
    if body is None:
        text = response.text.strip()
        return [text[:200]] if text else []
    messages = body.get("error_messages")
    if isinstance(messages, list):
        return [str(m) for m in messages]
    status_message = body.get("status_message")
    return [str(status_message)] if status_message else []


class MidtransClient:
    """Calls Midtrans with ``httpx.AsyncClient`` over aiohttp (``transport``); pass
    ``http_client`` or ``transport`` in tests.

    An injected ``http_client`` is left open by :meth:`aclose` (its owner closes it). The
    Authorization header is added per request rather than to a shared client, so a client
    shared with other code never carries the key.
    """

    def __init__(
        self,
        config: MidtransConfig,
        *,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if http_client is not None and transport is not None:
            raise ValueError("pass either http_client or transport, not both")
        self._config = config
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport or AiohttpTransport())
        token = base64.b64encode(f"{config.server_key}:".encode()).decode("ascii")
        self._headers = {
            "Authorization": f"Basic {token}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    def __repr__(self) -> str:
        return f"MidtransClient({self._config!r})"

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> MidtransClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- Snap -----------------------------------------------------------------------------

    async def create_snap(
        self,
        order_id: str,
        gross_amount: int,
        item_details: Sequence[ItemDetail],
        customer_details: Mapping[str, Any] | None = None,
        expiry_minutes: int | None = None,
        custom_fields: Sequence[str] | None = None,
    ) -> SnapToken:
        """Open a Snap payment session; ValueError for input Midtrans would refuse anyway.

        ``expiry_minutes`` should be the checkout's payment TTL, so that Midtrans itself
        refuses a payment that comes too late.
        """
        payload = build_snap_payload(
            order_id, gross_amount, item_details, customer_details, expiry_minutes, custom_fields
        )
        url = f"{self._config.snap_base_url}/snap/v1/transactions"
        extra = (
            {OVERRIDE_HEADER: ",".join(self._config.notification_urls)}
            if self._config.notification_urls
            else None
        )
        response, body = await self._call("POST", url, payload, extra_headers=extra)
        self._check(response, body, what=f"create Snap transaction {order_id}")
        token = body.get("token") if body else None
        redirect_url = body.get("redirect_url") if body else None
        if (
            not isinstance(token, str)
            or not token
            or not isinstance(redirect_url, str)
            or not redirect_url
        ):
            raise MidtransServerError(
                f"create Snap transaction {order_id}: the answer has no token/redirect_url",
                http_status=response.status_code,
            )
        return SnapToken(token=token, redirect_url=redirect_url)

    # --- Core API -------------------------------------------------------------------------

    async def status(self, order_id: str) -> TransactionStatus | None:
        """The transaction's status, or None while Midtrans has no transaction for the order."""
        url = self._core_url(order_id, "status")
        response, body = await self._call("GET", url, None)
        if _body_code(body) == 404 and response.status_code in (200, 404):
            # Older Midtrans answers HTTP 200 with body 404, newer HTTP 404: both mean "none yet".
            return None
        self._check(response, body, what=f"status of {order_id}")
        return self._parse_status(response, body, what=f"status of {order_id}")

    async def cancel(self, order_id: str) -> TransactionStatus:
        """Cancel a pending (or challenged) transaction; MidtransClientError with 412 if final."""
        return await self._change(order_id, "cancel", None)

    async def expire(self, order_id: str) -> TransactionStatus:
        """Expire a pending transaction now (answer status_code 407); 412 if no longer pending."""
        return await self._change(order_id, "expire", None)

    async def refund(
        self, order_id: str, amount: int, reason: str, refund_key: str
    ) -> TransactionStatus:
        """Refund ``amount`` IDR of a settled transaction.

        ``refund_key`` makes the refund idempotent at Midtrans: reuse the same key when
        retrying the same refund, so that a lost answer cannot refund twice.
        """
        if not _is_int(amount) or amount <= 0:
            raise ValueError(f"refund amount must be a positive int (IDR), got {amount!r}")
        if not refund_key:
            raise ValueError("refund_key is required (it makes retries safe)")
        payload = {"refund_key": refund_key, "amount": amount, "reason": reason}
        return await self._change(order_id, "refund", payload)

    # --- plumbing -------------------------------------------------------------------------

    def _core_url(self, order_id: str, action: str) -> str:
        validate_order_id(order_id)
        return f"{self._config.core_base_url}/v2/{quote(order_id, safe='')}/{action}"

    async def _change(
        self, order_id: str, action: str, payload: dict[str, Any] | None
    ) -> TransactionStatus:
        url = self._core_url(order_id, action)
        response, body = await self._call("POST", url, payload)
        what = f"{action} {order_id}"
        self._check(response, body, what=what)
        return self._parse_status(response, body, what=what)

    async def _call(
        self,
        method: str,
        url: str,
        payload: dict[str, Any] | None,
        *,
        extra_headers: Mapping[str, str] | None = None,
    ) -> tuple[httpx.Response, dict[str, Any] | None]:
        headers = {**self._headers, **extra_headers} if extra_headers else self._headers
        try:
            response = await self._http.request(
                method, url, json=payload, headers=headers, timeout=self._config.timeout
            )
        except httpx.TransportError as exc:
            # The exception text holds the URL but never the headers, so it is safe to show.
            raise MidtransServerError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        try:
            decoded = response.json()
        except ValueError:
            decoded = None
        body = decoded if isinstance(decoded, dict) else None
        log.debug("midtrans %s %s -> %s", method, url, response.status_code)
        return response, body

    def _check(self, response: httpx.Response, body: dict[str, Any] | None, *, what: str) -> None:
        http_status = response.status_code
        body_code = _body_code(body)
        raw_code = None if body is None or "status_code" not in body else str(body["status_code"])
        messages = _messages(body, response)

        def error(kind: type[MidtransError], code: int) -> MidtransError:
            if kind is MidtransClientError and _is_conflict(code, messages):
                kind = MidtransConflict
            return kind(
                f"{what} failed",
                http_status=http_status,
                status_code=raw_code,
                error_messages=messages,
            )

        if http_status >= 400:
            raise error(_classify(http_status), http_status)
        if 300 <= http_status < 400:
            # Redirects are not followed: a redirect means a wrong base URL, not a Midtrans answer.
            raise error(MidtransClientError, http_status)
        if body is None:
            raise MidtransServerError(
                f"{what}: the answer is not a JSON object", http_status=http_status
            )
        if body_code is not None and body_code >= 400 and body_code not in ACCEPTED_BODY_CODES:
            raise error(_classify(body_code), body_code)

    @staticmethod
    def _parse_status(
        response: httpx.Response, body: dict[str, Any] | None, *, what: str
    ) -> TransactionStatus:
        try:
            return TransactionStatus.from_json(body or {})
        except ValueError as exc:
            raise MidtransServerError(
                f"{what}: the answer is not a transaction status ({exc})",
                http_status=response.status_code,
                status_code=None if body is None else str(body.get("status_code")),
            ) from exc


def _classify(code: int) -> type[MidtransError]:
    # 429 is a 4xx but transient (rate limit): it belongs with the retryable errors.
    if code >= 500 or code == 429:
        return MidtransServerError
    return MidtransClientError


def _is_conflict(code: int, messages: Sequence[str]) -> bool:
    if code == 409 or code in CONFLICT_BODY_CODES:
        return True
    text = " ".join(messages).lower()
    return any(marker in text for marker in CONFLICT_MARKERS)


def build_snap_payload(
    order_id: str,
    gross_amount: int,
    item_details: Sequence[ItemDetail],
    customer_details: Mapping[str, Any] | None = None,
    expiry_minutes: int | None = None,
    custom_fields: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The Snap request body, validated the way Midtrans validates it (ValueError otherwise)."""
    validate_order_id(order_id)
    if not _is_int(gross_amount) or gross_amount <= 0:
        raise ValueError(f"gross_amount must be a positive int (IDR), got {gross_amount!r}")
    if not item_details:
        raise ValueError("item_details must not be empty")
    items = [item.to_json() for item in item_details]
    total = sum(item["price"] * item["quantity"] for item in items)
    if total != gross_amount:
        # Midtrans refuses this too, but only after a round trip and with a vaguer message.
        raise ValueError(f"the items sum to {total}, not gross_amount {gross_amount}")
    payload: dict[str, Any] = {
        "transaction_details": {"order_id": order_id, "gross_amount": gross_amount},
        "item_details": items,
    }
    if customer_details:
        payload["customer_details"] = dict(customer_details)
    if expiry_minutes is not None:
        if not _is_int(expiry_minutes) or expiry_minutes <= 0:
            raise ValueError(f"expiry_minutes must be a positive int, got {expiry_minutes!r}")
        payload["expiry"] = {"unit": "minute", "duration": expiry_minutes}
    if custom_fields:
        if len(custom_fields) > MAX_CUSTOM_FIELDS:
            raise ValueError(f"at most {MAX_CUSTOM_FIELDS} custom fields")
        for number, value in enumerate(custom_fields, start=1):
            if len(value) > CUSTOM_FIELD_MAX_LENGTH:
                raise ValueError(f"custom_field{number} is longer than {CUSTOM_FIELD_MAX_LENGTH}")
            payload[f"custom_field{number}"] = value
    return payload
