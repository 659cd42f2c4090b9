"""The apiserver's refusals: one exception carrying its Status object."""

from __future__ import annotations

import json
from typing import Any


class ApiError(Exception):
    """A non-2xx answer (or a watch's ERROR event). ``reason`` is the Status' reason
    (``NotFound``, ``Conflict``, ``Expired``...) or the HTTP phrase; ``message`` its
    message; ``body`` the decoded Status (or the raw text when it was not JSON)."""

    def __init__(self, status: int, reason: str, body: dict[str, Any] | str = "") -> None:
        self.status = status
        self.reason = reason
        self.body = body
        self.message = str(body.get("message", "")) if isinstance(body, dict) else body[:500]
        super().__init__(
            f"{status} {reason}: {self.message}" if self.message else f"{status} {reason}"
        )

    @classmethod
    def from_answer(cls, status: int, phrase: str, raw: bytes) -> ApiError:
        """From an HTTP answer: its Status object when the body is one."""
        text = raw.decode("utf-8", "replace")
        try:
            decoded = json.loads(text)
        except ValueError:
            return cls(status, phrase or "Error", text)
        if not isinstance(decoded, dict):
            return cls(status, phrase or "Error", text)
        return cls(status, str(decoded.get("reason") or phrase or "Error"), decoded)

    @classmethod
    def from_status(cls, status: dict[str, Any]) -> ApiError:
        """From a Status object on its own (a watch's ERROR event)."""
        code = status.get("code")
        return cls(
            code if isinstance(code, int) else 500, str(status.get("reason") or "Error"), status
        )
