"""The operator as its own process, killed with SIGKILL mid-saga and restarted."""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import AbstractContextManager

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.processes import ModuleProcess, free_port, python_module
from tests.integration.saga_fixtures import SANDBOX_KEY, SagaEnv


async def metric(proc: ModuleProcess, name: str) -> float:
    """The sum of one metric's samples on the process's /metrics (0 when it has none)."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{proc.base_url}/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def wait_leading(proc: ModuleProcess, within: float = 30.0) -> None:
    """Until the operator holds its Lease (it acts only then)."""
    deadline = asyncio.get_running_loop().time() + within
    while await metric(proc, "checkout_operator_leader") != 1:
        assert proc.process.poll() is None, proc.log()
        assert asyncio.get_running_loop().time() < deadline, proc.log()
        await asyncio.sleep(0.05)


def operator_process(saga: SagaEnv) -> AbstractContextManager[ModuleProcess]:
    s = saga.settings
    port = free_port()
    env = {
        "KUBECONFIG": str(saga.platform.kubeconfig),
        "CHECKOUT_DATABASE_URL": s.database_url.value,
        "CHECKOUT_DB_SCHEMA": s.db_schema,
        "CHECKOUT_NAMESPACE": saga.namespace,
        "CHECKOUT_NATS_URL": s.nats_url,
        **(s.nats_credentials.as_env() if s.nats_credentials else {}),
        "EVENTS_NAMESPACE": s.events_namespace,
        "CHECKOUT_REDIS_URL": s.redis_url.value,
        "CHECKOUT_EXPIRY_QUEUE": s.arq_queue,
        "CHECKOUT_USER_SERVICE": s.user_service,
        "CHECKOUT_PRODUCT_SERVICE": s.product_service,
        "SERVICE_TOKENS": s.service_token.value,
        "MIDTRANS_SERVER_KEY": SANDBOX_KEY,
        "MIDTRANS_SNAP_URL": saga.midtrans_url,
        "MIDTRANS_CORE_URL": saga.midtrans_url,
        "CHECKOUT_POLL_INTERVAL_SECONDS": "0.3",
        "CHECKOUT_POLL_MIN_AGE_SECONDS": "0",
        "CHECKOUT_POLL_RATE": "100",
        "CHECKOUT_METRICS_PORT": str(port),
        # Short leases: a successor of a SIGKILLed process waits about 2 s, not 15 s.
        "CHECKOUT_LEASE_DURATION_SECONDS": "2",
        "CHECKOUT_LEASE_RENEW_SECONDS": "0.5",
    }
    return python_module(
        "checkout_operator", port=port, health_path="/metrics", env=env, timeout=30
    )


async def test_sigkill_mid_saga_then_restart_completes_every_saga_once(saga: SagaEnv) -> None:
    products = [await saga.products.product(price=1_000, stock=5) for _ in range(3)]
    names: list[str] = []
    for delay in (0.05, 0.4, 1.0):
        with operator_process(saga) as proc:
            await wait_leading(proc)  # so that the kill lands mid-saga
            for p in products:
                names.append(await saga.create(items=[(p, 1_000, 1)]))
            await asyncio.sleep(delay)
            os.kill(proc.process.pid, signal.SIGKILL)
            proc.process.wait(10)
    with operator_process(saga) as proc:
        for name in names:
            await saga.wait_phase(name, "AwaitingPayment", within=60)
        for name in names[::2]:
            order = await saga.midtrans_order(name)
            paid = await saga.sandbox(order, "pay", payment_type="bank_transfer")
            assert paid.status_code == 200, paid.text
        for name in names[::2]:
            await saga.wait_phase(name, "Settled", within=60)
        # Let announcements and events settle, then check nothing happened twice.
        await asyncio.sleep(1.5)
        conn = await asyncpg.connect(saga.platform.postgres_dsn)
        try:
            schema = saga.settings.db_schema
            for name in names:
                row = await conn.fetchrow(
                    "SELECT committed_published, expiry_scheduled"
                    f' FROM "{schema}".checkouts WHERE order_id = $1',
                    name,
                )
                assert row is not None and row["committed_published"] and row["expiry_scheduled"]
            applied = await saga.products.pool.fetch(
                "SELECT transaction_id, event_type, count(*) AS n FROM reservation_events"
                " WHERE outcome = 'applied' GROUP BY 1, 2"
            )
            assert all(r["n"] == 1 for r in applied), applied
            committed = {r["transaction_id"] for r in applied if r["event_type"] == "committed"}
            assert committed == set(names)
        finally:
            await conn.close()
        # Each product: 3 checkouts of 1 unit; the paid ones are sold, the others held.
        for p in products:
            stock, reserved = await saga.products.stock_of(p)
            lines = await saga.products.pool.fetch(
                "SELECT r.status FROM reservation_lines l"
                " JOIN reservations r USING (transaction_id) WHERE l.product_id = $1",
                p,
            )
            settled = sum(1 for line in lines if line["status"] == "settled")
            assert len(lines) == 3
            assert (stock, reserved) == (5 - settled, 3 - settled)
        assert proc.stop() == 0
