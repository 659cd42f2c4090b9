"""Read-only queries on the operator's read model (schema ``checkouts``).

The API lists checkouts from Postgres, not the apiserver: archived checkouts
(deleted after their TTL) are there too, and listing scales with an index.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from saga_kit.pagination import decode_page_token, encode_page_token

_COLUMNS = (
    "c.order_id, c.user_id, c.phase, c.currency, c.total, c.snap_token, c.redirect_url,"
    " c.expires_at, c.failure_reason, c.failure_message, c.created_at, c.updated_at"
)


async def _with_items(pool: Any, rows: list[Any]) -> list[dict[str, Any]]:
    ids = [r["order_id"] for r in rows]
    items = await pool.fetch(
        "SELECT order_id, product_id, unit_price, quantity, name FROM checkout_items"
        " WHERE order_id = ANY($1::text[]) ORDER BY order_id, product_id",
        ids,
    )
    by_order: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_order.setdefault(item["order_id"], []).append(
            {k: item[k] for k in ("product_id", "unit_price", "quantity", "name")}
        )
    return [{**dict(r), "items": by_order.get(r["order_id"], [])} for r in rows]


async def _page(
    pool: Any, source: str, key: str, page_size: int, page_token: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first, by keyset on (created_at, order_id): stable while rows are added."""
    after = decode_page_token(page_token) if page_token else None
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM {source}"
        " AND ($2::timestamptz IS NULL OR (c.created_at, c.order_id) < ($2, $3))"
        " ORDER BY c.created_at DESC, c.order_id DESC LIMIT $4",
        key,
        after[0] if after else None,
        after[1] if after else "",
        page_size + 1,
    )
    page = rows[:page_size]
    token = None
    if len(rows) > page_size:
        token = encode_page_token(page[-1]["created_at"], page[-1]["order_id"])
    return await _with_items(pool, page), token


async def list_for_user(
    pool: Any, user_id: str, page_size: int, page_token: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    return await _page(pool, "checkouts c WHERE c.user_id = $1", user_id, page_size, page_token)


async def list_for_product(
    pool: Any, product_id: str, page_size: int, page_token: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    source = "checkouts c JOIN checkout_items i ON i.order_id = c.order_id WHERE i.product_id = $1"
    return await _page(pool, source, product_id, page_size, page_token)


async def get(pool: Any, order_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM checkouts c WHERE c.order_id = $1", order_id)
    if row is None:
        return None
    return (await _with_items(pool, [row]))[0]


async def open_checkouts(
    conn: Any, user_id: str, names: list[str]
) -> tuple[dict[str, bool], list[dt.datetime | None]]:
    """The user's open checkouts, and whether each of ``names`` is open if known.

    Returns (order id -> open) and the expiry times of the open ones. Open = not
    finished and not deleted (a checkout deleted by hand releases its stock).
    """
    rows = await conn.fetch(
        "SELECT order_id, finished_at IS NULL AND deleted_at IS NULL AS open, expires_at"
        " FROM checkouts WHERE user_id = $1"
        " AND ((finished_at IS NULL AND deleted_at IS NULL) OR order_id = ANY($2::text[]))",
        user_id,
        names,
    )
    known = {r["order_id"]: bool(r["open"]) for r in rows}
    return known, [r["expires_at"] for r in rows if r["open"]]
