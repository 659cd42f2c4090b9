"""Journal rows (``checkout_operator.readmodel.Record``) for tests that need no Postgres."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from checkout_operator.readmodel import Record

NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
BASE = Record(
    order_id="",
    namespace="shop",
    name="",
    uid="",
    user_id="u1",
    phase="Cancelled",
    payment_attempt=1,
    midtrans_order_id=None,
    snap_token=None,
    redirect_url=None,
    payment_status=None,
    reserve_attempted=True,
    committed_published=True,
    expiry_scheduled=True,
    final_event_published=True,
    expires_at=None,
    finished_at=NOW,
    deleted_at=None,
    total=10_000,
    created_at=NOW,
)


def record(order_id: str, **changes: Any) -> Record:
    return dataclasses.replace(BASE, order_id=order_id, name=order_id, uid=order_id, **changes)
