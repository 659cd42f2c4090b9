"""The journal of Midtrans orders whose money must go back (table ``payment_returns``).

One row per Midtrans order of a checkout that did not settle by it. Rows are
written when a checkout ends unsettled (or is deleted), and whenever a
notification or a poll shows money on such an order; they outlive the Checkout
resource, so a payment after a deletion is still found and returned.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

WATCHING, RETURNED, REFUSED, CLOSED = "watching", "returned", "refused", "closed"


@dataclass(frozen=True)
class Watched:
    midtrans_order_id: str
    order_id: str
    state: str
    watch_until: dt.datetime
    attempts: int
    last_error: str | None


_COLUMNS = ", ".join(Watched.__dataclass_fields__)


class PaymentReturnsStore:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def watch(
        self, order_id: str, midtrans_order: str, watch_until: dt.datetime, *, now: bool = False
    ) -> None:
        """Watch ``midtrans_order`` until ``watch_until`` (at least); ``now``: look at it soon."""
        await self.pool.execute(
            "INSERT INTO payment_returns (midtrans_order_id, order_id, watch_until)"
            " VALUES ($1, $2, $3)"
            " ON CONFLICT (midtrans_order_id) DO UPDATE SET"
            " watch_until = GREATEST(payment_returns.watch_until, EXCLUDED.watch_until),"
            # A closed order that shows money again (a late notification) is reopened.
            " state = CASE WHEN $4 AND payment_returns.state = 'closed' THEN 'watching'"
            " ELSE payment_returns.state END,"
            " next_check_at = CASE WHEN $4 THEN now() ELSE payment_returns.next_check_at END,"
            " updated_at = now()",
            midtrans_order,
            order_id,
            watch_until,
            now,
        )

    async def due(self, limit: int) -> list[Watched]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM payment_returns"
            " WHERE state IN ('watching', 'refused') AND next_check_at <= now()"
            " ORDER BY next_check_at LIMIT $1",
            limit,
        )
        return [Watched(**dict(r)) for r in rows]

    async def recheck_in(self, midtrans_order: str, delay: dt.timedelta) -> None:
        await self.pool.execute(
            "UPDATE payment_returns SET next_check_at = now() + $2, updated_at = now()"
            " WHERE midtrans_order_id = $1",
            midtrans_order,
            delay,
        )

    async def finish(
        self, midtrans_order: str, state: str, how: str | None = None, amount: int | None = None
    ) -> None:
        await self.pool.execute(
            "UPDATE payment_returns SET state = $2, returned_how = COALESCE($3, returned_how),"
            " returned_amount = COALESCE($4, returned_amount), last_error = NULL,"
            " updated_at = now() WHERE midtrans_order_id = $1",
            midtrans_order,
            state,
            how,
            amount,
        )

    async def refused(self, midtrans_order: str, error: str, retry_in: dt.timedelta) -> int:
        """Record a refused refund; returns how many times it has been refused."""
        attempts: int = await self.pool.fetchval(
            "UPDATE payment_returns SET state = 'refused', attempts = attempts + 1,"
            " last_error = $2, next_check_at = now() + $3, updated_at = now()"
            " WHERE midtrans_order_id = $1 RETURNING attempts",
            midtrans_order,
            error[:1024],
            retry_in,
        )
        return attempts

    async def get(self, midtrans_order: str) -> Watched | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM payment_returns WHERE midtrans_order_id = $1",
            midtrans_order,
        )
        return Watched(**dict(row)) if row else None

    async def count_refused(self) -> int:
        count: int = await self.pool.fetchval(
            "SELECT count(*) FROM payment_returns WHERE state = 'refused'"
        )
        return count
