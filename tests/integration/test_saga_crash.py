"""The operator as its own process, killed with SIGKILL mid-saga and restarted."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from contextlib import AbstractContextManager

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from saga_kit.events import Topology, TransactionEvent
from tests.helpers.processes import ModuleProcess, free_port, python_module
from tests.helpers.waiting import eventually
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


async def wait_leading(proc: ModuleProcess) -> None:
    """Until the operator holds its Lease (it acts only then)."""

    async def leading() -> bool:
        assert proc.process.poll() is None, proc.log()
        return await metric(proc, "checkout_operator_leader") == 1

    await eventually(leading, within=30, interval=0.05, failure=proc.log)


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


async def announced(saga: SagaEnv, names: list[str], paid: set[str]) -> bool:
    """Every checkout's `committed` published and expiry scheduled, and the paid
    ones' `settled` published."""
    conn = await asyncpg.connect(saga.platform.postgres_dsn)
    try:
        rows = await conn.fetch(
            "SELECT order_id, committed_published, expiry_scheduled, final_event_published"
            f' FROM "{saga.settings.db_schema}".checkouts WHERE order_id = ANY($1)',
            names,
        )
    finally:
        await conn.close()
    done = {
        r["order_id"]
        for r in rows
        if r["committed_published"]
        and r["expiry_scheduled"]
        and (r["final_event_published"] or r["order_id"] not in paid)
    }
    return done == set(names)


async def drained(saga: SagaEnv) -> bool:
    """The Product consumer has acknowledged every message in the stream."""
    topology = Topology.namespaced(saga.settings.events_namespace)
    nc = await saga.platform.nats()
    try:
        js = nc.jetstream()
        last = (await js.stream_info(topology.stream)).state.last_seq
        info = await js.consumer_info(topology.stream, "products")
    finally:
        await nc.close()
    return bool(info.ack_floor and info.ack_floor.stream_seq == last and not info.num_pending)


async def stream_messages(saga: SagaEnv) -> Counter[tuple[str, str]]:
    """The transaction events in the stream, counted by transaction and type (subject)."""
    topology = Topology.namespaced(saga.settings.events_namespace)
    nc = await saga.platform.nats()
    counts: Counter[tuple[str, str]] = Counter()
    try:
        js = nc.jetstream()
        state = (await js.stream_info(topology.stream)).state
        for seq in range(state.first_seq, state.last_seq + 1):
            msg = await js.get_msg(topology.stream, seq)
            assert msg.data is not None and msg.subject is not None
            event = TransactionEvent.model_validate_json(msg.data)
            assert msg.subject == topology.subject(event.type), msg
            counts[(event.transaction_id, event.type.value)] += 1
    finally:
        await nc.close()
    return counts


async def consumer_outcomes(saga: SagaEnv, names: list[str]) -> Counter[tuple[str, str, str]]:
    """What the Product consumer recorded (applied, duplicate, refused, unknown
    transaction), counted by transaction, event type and outcome."""
    rows = await saga.products.pool.fetch(
        "SELECT transaction_id, event_type, outcome FROM reservation_events"
        " WHERE transaction_id = ANY($1)",
        names,
    )
    return Counter((r["transaction_id"], r["event_type"], r["outcome"]) for r in rows)


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
            reply = await saga.sandbox(order, "pay", payment_type="bank_transfer")
            assert reply.status_code == 200, reply.text
        for name in names[::2]:
            await saga.wait_phase(name, "Settled", within=60)
        # Every announcement was made (the journal says so) and the consumer has
        # drained the stream: only then count what happened.
        paid = set(names[::2])
        await eventually(lambda: announced(saga, names, paid), within=60)
        await eventually(lambda: drained(saga), within=60)
        messages = await stream_messages(saga)
        outcomes = await consumer_outcomes(saga, names)
        # Exactly one message per transaction and event, and exactly one outcome of it,
        # `applied`: no republish under a new id, no duplicate, refused or unknown, and
        # no event of a type that did not happen (nothing expired or was cancelled).
        expected = {(n, "committed"): 1 for n in names} | {(n, "settled"): 1 for n in paid}
        assert messages == expected, messages
        assert outcomes == {(n, t, "applied"): 1 for n, t in expected}, outcomes
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
