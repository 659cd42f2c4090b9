"""``saga-devenv audit`` on the real servers, and the stock ledger it reads.

The saga runs for real (apiserver, Postgres, NATS, the User and Product services, the
Midtrans sandbox process, the operator); the audit runs as the command ops would run,
in its own process. A system left by the saga passes; then each invariant is broken
by hand, one at a time, directly in Postgres or at the sandbox, and the audit must
exit 1 naming exactly what disagrees.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg
import pytest

from midtrans import MidtransClient, MidtransConfig
from product_service import store
from product_service.domain import ReserveItem
from saga_kit import db
from saga_kit.events import EventType
from tests.conftest import Platform
from tests.helpers.processes import free_port
from tests.helpers.waiting import eventually
from tests.integration.product_fixtures import ProductEnv
from tests.integration.saga_fixtures import SANDBOX_KEY, SagaEnv
from tests.integration.test_saga_operator import (
    product,
    wait_stock,
    without_the_operators_deadline,
)


@dataclass(frozen=True)
class Audit:
    code: int
    report: dict[str, Any]
    stdout: str
    stderr: str

    def mismatches(self) -> set[tuple[str, str]]:
        return {(m["check"], m["subject"]) for m in self.report.get("mismatches", [])}

    def warnings(self) -> set[tuple[str, str]]:
        return {(m["check"], m["subject"]) for m in self.report.get("warnings", [])}


async def audit(saga: SagaEnv, *flags: str, as_json: bool = True) -> Audit:
    """The command, as ops would run it against this test's system."""
    argv = [
        "--database-url",
        saga.platform.postgres_dsn,
        "--readmodel-schema",
        saga.settings.db_schema,
        "--products-schema",
        saga.settings.db_schema.removesuffix("_op"),  # the saga fixture's naming
        "--kubeconfig",
        str(saga.platform.kubeconfig),
        "--namespace",
        saga.namespace,
        "--midtrans-url",
        saga.midtrans_url,
        "--settle-seconds",
        "0",
        *(["--json"] if as_json else []),
        *flags,
    ]
    env = {**os.environ, "MIDTRANS_SERVER_KEY": SANDBOX_KEY}  # the key by environment
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "saga_devenv",
        "audit",
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode is not None
    report = json.loads(stdout) if as_json and stdout.strip() else {}
    return Audit(proc.returncode, report, stdout, stderr)


async def sql(saga: SagaEnv, schema: str, statement: str, *args: Any) -> None:
    conn = await asyncpg.connect(saga.platform.postgres_dsn)
    try:
        await conn.execute(f'SET search_path TO "{schema}"')
        await conn.execute(statement, *args)
    finally:
        await conn.close()


async def test_a_clean_system_passes_and_each_broken_invariant_is_named(saga: SagaEnv) -> None:
    await saga.start_operator()
    p1 = await product(saga, price=10_000, stock=5)
    p2 = await product(saga, price=4_000, stock=3)
    paid = await saga.create(items=[(p1, 10_000, 2)], paymentTTLSeconds=600)
    expired = await saga.create(items=[(p1, 10_000, 1), (p2, 4_000, 1)], paymentTTLSeconds=2)
    running = await saga.create(items=[(p2, 4_000, 1)], paymentTTLSeconds=600)
    rejected = await saga.create(items=[(p1, 10_000, 100)], paymentTTLSeconds=600)
    await saga.wait_phase(paid, "AwaitingPayment")
    await saga.sandbox(paid, "pay", payment_type="bank_transfer")
    await saga.wait_phase(paid, "Settled")
    await saga.wait_phase(expired, "Expired", within=30)
    await saga.wait_phase(running, "AwaitingPayment")
    await saga.wait_phase(rejected, "Rejected")
    await store.update_product(saga.products.pool, p2, "owner-1", {"stock": 6})  # a restock
    await wait_stock(saga, p1, (3, 0))
    await wait_stock(saga, p2, (6, 1))
    await saga.operator.shutdown()  # from here on nothing mends what is broken by hand

    clean = await audit(saga)
    assert clean.code == 0, clean
    assert clean.report["mismatches"] == [] and clean.report["warnings"] == []
    assert (
        clean.report["checked"]
        == {
            "products": 2,
            "reservations": 3,
            "checkouts": 4,
            "resources": 4,
            "payments": 3,  # the paid order, the expired one's page, the rejected one's none
        }
        or clean.report["checked"]["payments"] >= 2
    )

    ns, products_schema, op = (
        saga.namespace,
        saga.settings.db_schema.removesuffix("_op"),
        saga.settings.db_schema,
    )
    broken: list[tuple[str, str, str, str, set[tuple[str, str]]]] = [
        (
            "a held unit appears from nowhere",
            products_schema,
            f"UPDATE products SET reserved = reserved + 1 WHERE id = '{p2}'",
            f"UPDATE products SET reserved = reserved - 1 WHERE id = '{p2}'",
            {("stock", f"product {p2}")},
        ),
        (
            "a unit vanishes without a ledger movement",
            products_schema,
            f"UPDATE products SET stock = stock - 1 WHERE id = '{p1}'",
            f"UPDATE products SET stock = stock + 1 WHERE id = '{p1}'",
            {("stock", f"product {p1}")},
        ),
        (
            "the reservation of an Expired checkout settles",
            products_schema,
            f"UPDATE reservations SET status = 'settled' WHERE transaction_id = '{expired}'",
            f"UPDATE reservations SET status = 'expired' WHERE transaction_id = '{expired}'",
            {
                ("reservation", f"checkout {ns}/{expired}"),
                ("stock", f"product {p1}"),  # sold without a sale in the ledger
                ("stock", f"product {p2}"),
            },
        ),
        (
            "the read model misses an ending",
            op,
            "UPDATE checkouts SET phase = 'AwaitingPayment', finished_at = NULL"
            f" WHERE order_id = '{expired}'",
            "UPDATE checkouts SET phase = 'Expired', finished_at = now()"
            f" WHERE order_id = '{expired}'",
            {
                ("read-model", f"checkout {ns}/{expired}"),
                ("reservation", f"checkout {ns}/{expired}"),  # released while "running"
            },
        ),
        (
            "the row of a running checkout belongs to another resource",
            op,
            f"UPDATE checkouts SET uid = uid || '-x' WHERE order_id = '{running}'",
            f"UPDATE checkouts SET uid = left(uid, -2) WHERE order_id = '{running}'",
            {("read-model", f"checkout {ns}/{running}")},
        ),
    ]
    for what, schema, corrupt, mend, named in broken:
        await sql(saga, schema, corrupt)
        found = await audit(saga)
        assert (found.code, found.mismatches()) == (1, named), (what, found.report)
        await sql(saga, schema, mend)
        assert (await audit(saga)).code == 0, what

    # People read the lines: the object and both sides.
    await sql(saga, products_schema, broken[0][2])
    text = await audit(saga, as_json=False)
    assert text.code == 1
    assert (
        f"MISMATCH stock product {p2}: products.reserved=2 vs open reservations hold 1"
        in text.stdout.splitlines()
    )
    assert text.stdout.splitlines()[-1].endswith("1 mismatches, 0 warnings")
    await sql(saga, products_schema, broken[0][3])

    # Money on the expired checkout's page: watched for return, so a warning ...
    order = await saga.midtrans_order(expired)
    settled = await saga.sandbox(order, "force-settle")
    assert settled.status_code == 200, settled.text
    late = await audit(saga)
    assert (late.code, late.warnings()) == (
        0,
        {("money", f"checkout {ns}/{expired} order {order}")},
    )
    assert (await audit(saga, "--strict")).code == 1
    # ... and a mismatch once nobody watches it any more.
    await sql(
        saga, op, "UPDATE payment_returns SET state = 'closed' WHERE midtrans_order_id = $1", order
    )
    kept = await audit(saga)
    assert (kept.code, kept.mismatches()) == (
        1,
        {("money", f"checkout {ns}/{expired} order {order}")},
    )
    message = kept.report["mismatches"][0]
    assert "payment_returns closed" in message["left"] and "settlement" in message["right"]

    # The money of a sold checkout refunded: goods gone, money gone.
    config = MidtransConfig(SANDBOX_KEY, saga.midtrans_url, saga.midtrans_url)
    async with MidtransClient(config) as midtrans:
        await midtrans.refund(paid, 20_000, "audit test", refund_key=f"audit-{uuid.uuid4().hex}")
    refunded = await audit(saga)
    assert ("money", f"checkout {ns}/{paid} order {paid}") in refunded.mismatches()

    # A source that cannot be read gives no verdict.
    nowhere = await audit(saga, "--midtrans-url", f"http://127.0.0.1:{free_port()}")
    assert nowhere.code == 2 and "Midtrans" in nowhere.report["error"], nowhere


async def test_a_checkout_running_long_past_its_journaled_deadline_is_named(
    saga: SagaEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stuck awaiting payment past the deadline journaled with its terms (its Snap page has
    lapsed, so nobody can buy what it holds): nothing else disagrees, resource and row say
    AwaitingPayment and the reservation is open, yet the audit names it once the deadline
    is more than the grace behind."""
    without_the_operators_deadline(monkeypatch)
    await saga.start_operator(worker=False)  # nothing expires it
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=1)
    await saga.wait_phase(name, "AwaitingPayment")
    record = await saga.operator.deps.readmodel.get(name)
    assert record is not None and record.expires_at is not None
    await saga.operator.shutdown()
    deadline = record.expires_at
    await eventually(lambda: dt.datetime.now(dt.UTC) > deadline + dt.timedelta(seconds=1))

    found = await audit(saga)
    assert (found.code, found.mismatches()) == (
        1,
        {("reservation", f"checkout {saga.namespace}/{name}")},
    ), found.report
    assert "payment deadline" in found.report["mismatches"][0]["left"]
    assert (await audit(saga, "--settle-seconds", "3600")).code == 0  # within the grace


async def test_a_read_model_that_is_not_there_is_no_verdict(saga: SagaEnv) -> None:
    found = await audit(saga)  # no operator ever ran: its schema has no tables
    assert found.code == 2, found
    assert "no table checkouts" in found.report["error"]
    assert "could not check" in found.stderr


# --- the stock ledger ------------------------------------------------------------------------


async def movements(pool: Any, product_id: str) -> list[tuple[str, int, str | None]]:
    rows = await pool.fetch(
        "SELECT reason, delta, reference FROM stock_movements WHERE product_id = $1 ORDER BY id",
        product_id,
    )
    return [(r["reason"], r["delta"], r["reference"]) for r in rows]


async def test_every_stock_change_is_in_the_ledger_and_a_sale_is_made_once(
    product_env: ProductEnv,
) -> None:
    pool = product_env.pool
    p = await product_env.product(price=100, stock=5)
    await store.update_product(pool, p, "owner-1", {"stock": 8})
    await store.update_product(pool, p, "owner-1", {"stock": 6, "price": 100})
    await store.update_product(pool, p, "owner-1", {"name": "renamed"})  # no stock change
    for tx in ("sold-once", "released"):
        await store.reserve(pool, tx, "u-1", [ReserveItem(p, 100, 2)])
    await store.apply_event(pool, "sold-once", EventType.SETTLED)
    await store.apply_event(pool, "sold-once", EventType.SETTLED)  # a duplicate
    await store.apply_event(pool, "released", EventType.EXPIRED)
    assert await movements(pool, p) == [
        ("created", 5, None),
        ("restock", 3, None),
        ("adjust", -2, None),
        ("sold", -2, "sold-once"),
    ]
    assert await product_env.stock_of(p) == (4, 0)

    # A sale this transaction already made (say, recorded before a crash lost the rest)
    # is not made again: the stock follows the ledger.
    await store.reserve(pool, "again", "u-1", [ReserveItem(p, 100, 1)])
    await pool.execute(
        "INSERT INTO stock_movements (product_id, delta, reason, reference)"
        " VALUES ($1, -1, 'sold', 'again')",
        p,
    )
    await pool.execute("UPDATE products SET stock = stock - 1 WHERE id = $1", p)
    await store.apply_event(pool, "again", EventType.SETTLED)
    stock, reserved = await product_env.stock_of(p)
    assert (stock, reserved) == (3, 0)
    assert sum(delta for _, delta, _ in await movements(pool, p)) == stock


async def test_the_migration_starts_the_ledger_from_what_is_on_hand_and_was_sold(
    platform: Platform, db_schema: str
) -> None:
    pool = await db.create_pool(platform.postgres_dsn, db_schema)
    try:
        # The schema as it was before the ledger: 0001 only, with some history in it.
        first = resources.files("product_service").joinpath("migrations/0001_products.sql")
        async with pool.acquire() as conn:
            await conn.execute(first.read_text())
            await conn.execute(
                "CREATE TABLE schema_migrations (name text PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now());"
                "INSERT INTO schema_migrations (name) VALUES ('0001_products.sql');"
                "INSERT INTO products (id, owner_id, name, slug, price, stock, reserved) VALUES"
                " ('a', 'o', 'A', 'a', 1, 7, 2), ('b', 'o', 'B', 'b', 1, 4, 0);"
                "INSERT INTO reservations (transaction_id, user_id, status, request_hash) VALUES"
                " ('t-sold', 'u', 'settled', 'h'), ('t-open', 'u', 'committed', 'h'),"
                " ('t-gone', 'u', 'cancelled', 'h');"
                "INSERT INTO reservation_lines VALUES"
                " ('t-sold', 'a', 'A', 1, 3), ('t-sold', 'b', 'B', 1, 1),"
                " ('t-open', 'a', 'A', 1, 2), ('t-gone', 'b', 'B', 1, 5);"
            )
        applied = await db.migrate(pool, "product_service", db_schema)
        assert applied[0] == "0002_stock_ledger.sql"  # the later ones follow it
        assert await movements(pool, "a") == [("baseline", 10, None), ("sold", -3, "t-sold")]
        assert await movements(pool, "b") == [("baseline", 5, None), ("sold", -1, "t-sold")]
    finally:
        await pool.close()
