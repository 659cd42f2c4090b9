"""Opaque page tokens for keyset pagination on (created_at, id).

Keyset pages stay complete and stable while rows are added, unlike offsets.
"""

from __future__ import annotations

import base64
import datetime as dt
import json


class InvalidPageToken(ValueError):
    """The token was not issued by this codec (or was tampered with)."""


def encode_page_token(created_at: dt.datetime, key: str) -> str:
    raw = json.dumps([created_at.isoformat(), key])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_page_token(token: str) -> tuple[dt.datetime, str]:
    try:
        created, key = json.loads(base64.urlsafe_b64decode(token.encode()))
        return dt.datetime.fromisoformat(created), str(key)
    except (ValueError, TypeError) as exc:
        raise InvalidPageToken("page_token is not one this service issued") from exc
