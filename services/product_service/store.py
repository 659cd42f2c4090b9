"""Product and reservation storage in Postgres (asyncpg).

Concurrency design:
* Reserve runs in one transaction. It first inserts the reservation row: a
  concurrent Reserve with the same transaction id waits on the primary key and
  then replays the stored result, so a retried call holds stock once. It then
  locks the products ``ORDER BY id FOR UPDATE``: every transaction locks rows in
  the same order, so two checkouts of the same products in opposite orders can't
  deadlock. Any failed check rolls everything back (all or nothing).
* An event updates the reservation with a status guard in the WHERE clause and,
  in the same transaction, the stock of its lines (again in id order), so a
  duplicate or out-of-order event finds the guard false and changes nothing.
* CHECK constraints (``stock >= reserved >= 0``) are the last line of defence.
* Every change of ``stock`` writes a ``stock_movements`` row in the same
  transaction (the stock ledger: created, restock/adjust by the owner, sold by a
  transaction), so the movements of a product always sum to its stock. A sale's
  movement is unique per (product, transaction) and the stock is lowered only by
  the movements actually written, so a transaction never sells twice.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from saga_kit.events import EventType
from saga_kit.pagination import InvalidPageToken, decode_page_token, encode_page_token

from .domain import (
    OUTSTANDING,
    Decision,
    ErrorKind,
    Outcome,
    ProductError,
    ProductStock,
    ReservationStatus,
    ReserveItem,
    StockEffect,
    check_items,
    decide,
    event_moves_stock,
    not_found,
    request_fingerprint,
)


@dataclass(frozen=True)
class Product:
    id: str
    owner_id: str
    name: str
    slug: str
    description: str
    price: int
    stock: int
    reserved: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def available(self) -> int:
        return self.stock - self.reserved


@dataclass(frozen=True)
class ReservedLine:
    product_id: str
    product_name: str
    unit_price: int
    quantity: int


@dataclass(frozen=True)
class Reservation:
    transaction_id: str
    user_id: str
    status: ReservationStatus
    lines: list[ReservedLine]
    subtotal: int
    created_at: dt.datetime
    updated_at: dt.datetime


_PRODUCT_COLUMNS = (
    "id, owner_id, name, slug, description, price, stock, reserved, created_at, updated_at"
)


def _product(row: Any) -> Product:
    return Product(**dict(row))


async def _load_reservation(conn: Any, transaction_id: str) -> Reservation | None:
    row = await conn.fetchrow(
        "SELECT transaction_id, user_id, status, subtotal, created_at, updated_at"
        " FROM reservations WHERE transaction_id = $1",
        transaction_id,
    )
    if row is None:
        return None
    lines = await conn.fetch(
        "SELECT product_id, product_name, unit_price, quantity FROM reservation_lines"
        " WHERE transaction_id = $1 ORDER BY product_id",
        transaction_id,
    )
    return Reservation(
        transaction_id=row["transaction_id"],
        user_id=row["user_id"],
        status=ReservationStatus(row["status"]),
        lines=[ReservedLine(**dict(line)) for line in lines],
        subtotal=row["subtotal"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def reserve(
    pool: Any, transaction_id: str, user_id: str, items: Sequence[ReserveItem]
) -> tuple[Reservation, bool]:
    """Reserve all items or none; returns the reservation and whether it was a replay.

    The product rows stay locked from the SELECT ... FOR UPDATE to the commit, so
    that stretch is kept to three statements: a hot product's throughput is
    bounded by how long each reservation holds its row.
    """
    fingerprint = request_fingerprint(user_id, items)
    subtotal = sum(i.unit_price * i.quantity for i in items)
    async with pool.acquire() as conn, conn.transaction():
        created = await conn.fetchrow(
            "INSERT INTO reservations (transaction_id, user_id, status, request_hash, subtotal)"
            " VALUES ($1, $2, 'reserved', $3, $4)"
            " ON CONFLICT (transaction_id) DO NOTHING RETURNING created_at, updated_at",
            transaction_id,
            user_id,
            fingerprint,
            subtotal,
        )
        if created is None:
            return await _replay(conn, transaction_id, fingerprint), True

        ordered = sorted(items, key=lambda i: i.product_id)
        ids = [i.product_id for i in ordered]
        rows = await conn.fetch(
            "SELECT id, name, price, stock, reserved FROM products"
            " WHERE id = ANY($1::text[]) AND deleted_at IS NULL ORDER BY id FOR UPDATE",
            ids,
        )
        products = {r["id"]: ProductStock(**dict(r)) for r in rows}
        check_items(items, products)  # raises: the transaction rolls back

        quantities = [i.quantity for i in ordered]
        # The rows are locked already, so the update order cannot deadlock.
        await conn.execute(
            "UPDATE products p SET reserved = p.reserved + r.quantity"
            " FROM unnest($1::text[], $2::int[]) AS r(id, quantity) WHERE p.id = r.id",
            ids,
            quantities,
        )
        lines = [
            ReservedLine(i.product_id, products[i.product_id].name, i.unit_price, i.quantity)
            for i in ordered
        ]
        await conn.execute(
            "INSERT INTO reservation_lines"
            " (transaction_id, product_id, product_name, unit_price, quantity)"
            " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::int[])",
            transaction_id,
            ids,
            [line.product_name for line in lines],
            [line.unit_price for line in lines],
            quantities,
        )
        return (
            Reservation(
                transaction_id=transaction_id,
                user_id=user_id,
                status=ReservationStatus.RESERVED,
                lines=lines,
                subtotal=subtotal,
                created_at=created["created_at"],
                updated_at=created["updated_at"],
            ),
            False,
        )


async def _replay(conn: Any, transaction_id: str, fingerprint: str) -> Reservation:
    """The stored result of an earlier Reserve with this id, if it asked the same."""
    stored = await conn.fetchval(
        "SELECT request_hash FROM reservations WHERE transaction_id = $1", transaction_id
    )
    if stored != fingerprint:
        raise ProductError(
            ErrorKind.CONFLICT,
            "TRANSACTION_ID_REUSED",
            f"transaction {transaction_id} already reserved other items",
            {"transaction_id": transaction_id},
        )
    existing = await _load_reservation(conn, transaction_id)
    assert existing is not None
    return existing


async def get_reservation(pool: Any, transaction_id: str) -> Reservation | None:
    async with pool.acquire() as conn:
        return await _load_reservation(conn, transaction_id)


async def open_reservations(pool: Any, transaction_ids: Sequence[str]) -> list[str]:
    """Which of these transactions' reservations still hold stock."""
    rows = await pool.fetch(
        "SELECT transaction_id FROM reservations"
        " WHERE transaction_id = ANY($1::text[]) AND status = ANY($2::text[])",
        list(transaction_ids),
        [status.value for status in OUTSTANDING],
    )
    return [row["transaction_id"] for row in rows]


async def apply_event(
    pool: Any, transaction_id: str, event: EventType, stream_seq: int | None = None
) -> Decision:
    """Apply one transaction event exactly once; record what happened.

    Three statements for an event that only moves the status (``committed``), four or
    five for one that moves stock, each a round trip inside the transaction: the
    reservation locked (with its lines when the event could move stock), the status
    moved and the event recorded in one statement, then the products.
    """
    moves_stock = event_moves_stock(event)
    async with pool.acquire() as conn, conn.transaction():
        if moves_stock:
            # The lines are read in the locking statement's snapshot: right, because a
            # reservation's lines are written with it (one transaction) and never change.
            row = await conn.fetchrow(
                "SELECT status, ARRAY(SELECT product_id FROM reservation_lines l"
                " WHERE l.transaction_id = r.transaction_id ORDER BY product_id) AS ids,"
                " ARRAY(SELECT quantity FROM reservation_lines l"
                " WHERE l.transaction_id = r.transaction_id ORDER BY product_id) AS quantities"
                " FROM reservations r WHERE transaction_id = $1 FOR UPDATE OF r",
                transaction_id,
            )
            current = row["status"] if row is not None else None
        else:
            row = None
            current = await conn.fetchval(
                "SELECT status FROM reservations WHERE transaction_id = $1 FOR UPDATE",
                transaction_id,
            )
        from_status = ReservationStatus(current) if current is not None else None
        decision = decide(event, from_status)
        to_status = decision.to_status.value if decision.to_status else None
        applied = decision.outcome is Outcome.APPLIED
        # The status moves (when applied) and the event is recorded in one statement;
        # the reservation is locked, so its status is still ``current``.
        await conn.execute(
            "WITH moved AS (UPDATE reservations SET status = $5, updated_at = now()"
            " WHERE $7 AND transaction_id = $1 AND status = $4)"
            " INSERT INTO reservation_events"
            " (transaction_id, event_type, outcome, from_status, to_status, stream_seq)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            transaction_id,
            event.value,
            decision.outcome.value,
            current,
            to_status,
            stream_seq,
            applied,
        )
        if applied and decision.effect is not StockEffect.NONE:
            assert row is not None, f"{event} moved stock but its lines were not read"
            lines = list(zip(row["ids"], row["quantities"], strict=True))
            sold: set[str] = set()
            if decision.effect is StockEffect.FINALIZE:
                sold = await _record_sale(conn, transaction_id, lines)
            # One line at a time in product order: the lock order every transaction keeps.
            await conn.executemany(
                "UPDATE products SET reserved = reserved - $2,"
                " stock = stock - CASE WHEN $3 THEN $2 ELSE 0 END, updated_at = now()"
                " WHERE id = $1",
                [(product_id, quantity, product_id in sold) for product_id, quantity in lines],
            )
        return decision


async def _record_sale(
    conn: Any, transaction_id: str, lines: Sequence[tuple[str, int]]
) -> set[str]:
    """The sale's ledger movements; the products sold now (not already by this transaction)."""
    rows = await conn.fetch(
        "INSERT INTO stock_movements (product_id, delta, reason, reference)"
        " SELECT product_id, -quantity, 'sold', $1"
        " FROM unnest($2::text[], $3::bigint[]) AS l(product_id, quantity)"
        " ON CONFLICT (product_id, reference) WHERE reason = 'sold' DO NOTHING"
        " RETURNING product_id",
        transaction_id,
        [product_id for product_id, _ in lines],
        [quantity for _, quantity in lines],
    )
    return {row["product_id"] for row in rows}


async def _record_movement(conn: Any, product_id: str, delta: int, reason: str) -> None:
    await conn.execute(
        "INSERT INTO stock_movements (product_id, delta, reason) VALUES ($1, $2, $3)",
        product_id,
        delta,
        reason,
    )


# --- products -----------------------------------------------------------------


async def create_product(
    pool: Any,
    owner_id: str,
    name: str,
    slug: str,
    description: str,
    price: int,
    stock: int,
) -> Product:
    try:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO products (id, owner_id, name, slug, description, price, stock)"
                f" VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_PRODUCT_COLUMNS}",
                str(uuid.uuid4()),
                owner_id,
                name,
                slug,
                description,
                price,
                stock,
            )
            await _record_movement(conn, row["id"], stock, "created")
    except asyncpg.UniqueViolationError as exc:
        raise _slug_taken(slug) from exc
    return _product(row)


def _slug_taken(slug: str) -> ProductError:
    return ProductError(
        ErrorKind.CONFLICT,
        "SLUG_TAKEN",
        f"slug {slug!r} is used by another product",
        {"slug": slug},
    )


async def get_product(pool: Any, product_id: str) -> Product | None:
    row = await pool.fetchrow(
        f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE id = $1 AND deleted_at IS NULL",
        product_id,
    )
    return _product(row) if row else None


def decode_cursor(token: str) -> tuple[dt.datetime, str]:
    try:
        return decode_page_token(token)
    except InvalidPageToken as exc:
        raise ProductError(
            ErrorKind.INVALID,
            "INVALID_PAGE_TOKEN",
            "page_token is not one this service issued",
            field_violations=[("page_token", "malformed")],
        ) from exc


async def list_products(
    pool: Any, owner_id: str | None, page_size: int, page_token: str | None
) -> tuple[list[Product], str | None]:
    """Live products, oldest first, by keyset pagination (stable under inserts)."""
    after = decode_cursor(page_token) if page_token else None
    rows = await pool.fetch(
        f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE deleted_at IS NULL"
        " AND ($1::text IS NULL OR owner_id = $1)"
        " AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))"
        " ORDER BY created_at, id LIMIT $4",
        owner_id,
        after[0] if after else None,
        after[1] if after else "",
        page_size + 1,
    )
    products = [_product(r) for r in rows[:page_size]]
    next_token = (
        encode_page_token(products[-1].created_at, products[-1].id)
        if len(rows) > page_size
        else None
    )
    return products, next_token


async def update_product(
    pool: Any, product_id: str, owner_id: str, changes: dict[str, Any]
) -> Product:
    """Apply an owner's partial update; stock may never drop below what is reserved."""
    allowed = {"name", "slug", "description", "price", "stock"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {_PRODUCT_COLUMNS} FROM products"
            " WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
            product_id,
        )
        if row is None:
            raise not_found(product_id)
        current = _product(row)
        if current.owner_id != owner_id:
            raise _not_owner(product_id)
        if "stock" in changes and changes["stock"] < current.reserved:
            raise ProductError(
                ErrorKind.PRECONDITION,
                "STOCK_BELOW_RESERVED",
                f"stock cannot go below {current.reserved}: that many units are held by "
                "checkouts awaiting payment",
                {"product_id": product_id, "reserved": str(current.reserved)},
            )
        if not changes:
            return current
        if current.price <= 0 and "price" not in changes:
            # Priced 0 from before prices had to be positive (migration 0003): the
            # database refuses any change that leaves it so.
            raise ProductError(
                ErrorKind.PRECONDITION,
                "PRICE_REQUIRED",
                "this product is priced 0, which is no longer allowed: give it a price "
                "(at least 1) in the same change, or delete it",
                {"product_id": product_id},
            )
        assignments = ", ".join(f"{col} = ${n}" for n, col in enumerate(changes, start=2))
        try:
            updated = await conn.fetchrow(
                f"UPDATE products SET {assignments}, updated_at = now() WHERE id = $1"
                f" RETURNING {_PRODUCT_COLUMNS}",
                product_id,
                *changes.values(),
            )
        except asyncpg.UniqueViolationError as exc:
            raise _slug_taken(str(changes.get("slug"))) from exc
        delta = updated["stock"] - current.stock
        if delta:
            await _record_movement(conn, product_id, delta, "restock" if delta > 0 else "adjust")
        return _product(updated)


async def delete_product(pool: Any, product_id: str, owner_id: str) -> None:
    """Soft delete: reservations keep their lines; the slug becomes free."""
    async with pool.acquire() as conn, conn.transaction():
        owner = await conn.fetchval(
            "SELECT owner_id FROM products WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
            product_id,
        )
        if owner is None:
            raise not_found(product_id)
        if owner != owner_id:
            raise _not_owner(product_id)
        await conn.execute(
            "UPDATE products SET deleted_at = now(), updated_at = now() WHERE id = $1", product_id
        )


def _not_owner(product_id: str) -> ProductError:
    return ProductError(
        ErrorKind.FORBIDDEN,
        "NOT_PRODUCT_OWNER",
        f"only the owner may change product {product_id}",
        {"product_id": product_id},
    )


async def events_for(pool: Any, transaction_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT event_type, outcome, from_status, to_status, stream_seq FROM reservation_events"
        " WHERE transaction_id = $1 ORDER BY id",
        transaction_id,
    )
    return [dict(r) for r in rows]
