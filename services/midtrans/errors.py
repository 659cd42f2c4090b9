"""Typed Midtrans errors, split by what the caller should do about them.

Callers mostly need one decision: retry or not. :class:`MidtransServerError` (5xx, 429,
timeouts, connection failures, garbled answers) is transient; :class:`MidtransClientError`
(other 4xx, including body status codes such as 412) is permanent for the same request.
Messages carry the HTTP status, the body's ``status_code`` and its error messages, never
request headers, so the server key cannot end up in a log line through an exception.
"""

from __future__ import annotations

from collections.abc import Sequence


class MidtransError(Exception):
    """A Midtrans call failed; ``http_status`` is None when no HTTP answer arrived."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        status_code: str | None = None,
        error_messages: Sequence[str] = (),
    ) -> None:
        self.message = message
        self.http_status = http_status
        self.status_code = status_code
        self.error_messages: tuple[str, ...] = tuple(error_messages)
        super().__init__(message)

    def __str__(self) -> str:
        details = [f"http_status={self.http_status}"]
        if self.status_code is not None:
            details.append(f"status_code={self.status_code}")
        if self.error_messages:
            details.append(f"error_messages={list(self.error_messages)}")
        return f"{self.message} ({', '.join(details)})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class MidtransClientError(MidtransError):
    """Midtrans refused the request (4xx or body status_code 4xx): retrying will not help."""


class MidtransConflict(MidtransClientError):
    """The order_id was already used at Midtrans.

    Seen when a create is retried after its first answer was lost: the earlier Snap token is
    valid but its value is unknown, so the caller must look at the order's status instead.
    """


class MidtransServerError(MidtransError):
    """Midtrans failed or could not be reached (5xx, 429, transport error): retry later."""
