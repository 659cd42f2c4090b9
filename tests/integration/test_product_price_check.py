"""Postgres itself refuses a product priced 0 (migration 0003_price_positive), and the
migration applies on a schema that already holds products, priced 0 ones included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import asyncpg
import pytest

from product_service import store
from product_service.domain import ErrorKind, ProductError
from saga_kit import db
from tests.conftest import Platform

CONSTRAINT = "products_price_positive"
BEFORE = ("0001_products.sql", "0002_stock_ledger.sql")  # the schema before the check


@pytest.fixture
async def pool(platform: Platform, db_schema: str) -> AsyncIterator[Any]:
    pool = await db.create_pool(platform.postgres_dsn, db_schema)
    yield pool
    await pool.close()


async def _insert(pool: Any, product_id: str, price: int, deleted: bool = False) -> None:
    await pool.execute(
        "INSERT INTO products (id, owner_id, name, slug, price, stock, deleted_at)"
        " VALUES ($1, 'owner', $1, $1, $2, 3, CASE WHEN $3 THEN now() END)",
        product_id,
        price,
        deleted,
    )


async def _validated(pool: Any) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT convalidated FROM pg_constraint WHERE conname = $1"
            " AND conrelid = 'products'::regclass",
            CONSTRAINT,
        )
    )


async def _migrated_before_the_check(pool: Any) -> None:
    """The schema as a Product service before 0003 left it."""
    folder = resources.files("product_service").joinpath("migrations")
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for name in BEFORE:
            await conn.execute(folder.joinpath(name).read_text())
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)


async def test_postgres_refuses_a_price_of_zero_on_insert_and_update(
    pool: Any, db_schema: str
) -> None:
    await db.migrate(pool, "product_service", db_schema)
    for price in (0, -1):
        with pytest.raises(asyncpg.CheckViolationError):
            await _insert(pool, f"p{-price}", price)
    assert await _validated(pool)
    await _insert(pool, "tea", 1)
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await pool.execute("UPDATE products SET price = 0 WHERE id = 'tea'")
    assert refused.value.constraint_name == CONSTRAINT
    assert await pool.fetchval("SELECT price FROM products WHERE id = 'tea'") == 1


async def test_the_check_is_added_to_a_schema_holding_products(pool: Any, db_schema: str) -> None:
    await _migrated_before_the_check(pool)
    await _insert(pool, "tea", 20_000)
    await _insert(pool, "gone", 0, deleted=True)
    assert await db.migrate(pool, "product_service", db_schema) == ["0003_price_positive.sql"]
    assert await _validated(pool)  # nothing live was priced 0: the whole table is checked
    with pytest.raises(asyncpg.CheckViolationError):
        await _insert(pool, "free", 0)


async def test_products_priced_zero_from_before_leave_the_check_not_valid_until_repriced(
    pool: Any, db_schema: str
) -> None:
    await _migrated_before_the_check(pool)
    for product_id, price in (("tea", 20_000), ("free", 0), ("stale", 0)):
        await _insert(pool, product_id, price)
    assert await db.migrate(pool, "product_service", db_schema) == ["0003_price_positive.sql"]
    assert not await _validated(pool)  # the old rows stay as they were
    rows = await pool.fetch("SELECT id, price FROM products ORDER BY id")
    assert [(r["id"], r["price"]) for r in rows] == [("free", 0), ("stale", 0), ("tea", 20_000)]

    with pytest.raises(asyncpg.CheckViolationError):  # new rows are checked all the same
        await _insert(pool, "new", 0)
    with pytest.raises(asyncpg.CheckViolationError):  # a change must give it a price
        await pool.execute("UPDATE products SET stock = 5 WHERE id = 'free'")
    await pool.execute("UPDATE products SET price = 5000, stock = 5 WHERE id = 'free'")
    await pool.execute("UPDATE products SET deleted_at = now() WHERE id = 'stale'")

    await pool.execute(f"ALTER TABLE products VALIDATE CONSTRAINT {CONSTRAINT}")
    assert await _validated(pool)


async def test_changing_a_product_priced_zero_asks_for_a_price_not_a_500(
    pool: Any, db_schema: str
) -> None:
    await _migrated_before_the_check(pool)
    await _insert(pool, "old", 0)
    await db.migrate(pool, "product_service", db_schema)
    with pytest.raises(ProductError) as refused:  # not the database's CheckViolationError
        await store.update_product(pool, "old", "owner", {"stock": 5})
    assert refused.value.kind is ErrorKind.PRECONDITION
    assert refused.value.reason == "PRICE_REQUIRED"
    changed = await store.update_product(pool, "old", "owner", {"stock": 5, "price": 7_000})
    assert (changed.price, changed.stock) == (7_000, 5)
