"""Two releases on one Midtrans merchant: a genuine notification of release A, replayed
to release B's webhook, must not make B refund A's sale (it did before session 14).

docs/scale-out.md: releases may share one Midtrans merchant, and if two releases use the
same order id (Checkouts applied by hand) "Midtrans refuses the second payment page and
that release makes a new one (<order>~2), which only it knows". Release A sells by order
``<name>``; release B's checkout of the same name pays on ``<name>~2``. Someone who saw
A's genuine settlement notification POSTs it to B's public webhook: B's inbox maps
``<name>`` to its own checkout (order_id_of), finds money on "another order of the
checkout" and refunds it: A's goods are sold, A's money is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import asyncpg
import httpx
from kubernetes import client

from product_service import store
from product_service.app import open_database, start_grpc_server
from product_service.consumer import EventConsumer
from saga_kit.events import Topology, ensure_streams
from saga_kit.nats_access import Role
from tests.conftest import Platform
from tests.helpers import leaks
from tests.helpers.namespaces import remove_namespace
from tests.helpers.waiting import eventually
from tests.integration.payment_signals import inbox_drained
from tests.integration.saga_fixtures import SagaEnv


def checkout_body(name: str, user: str, product: str) -> str:
    return json.dumps(
        {
            "apiVersion": "checkout.saga.dev/v1alpha1",
            "kind": "Checkout",
            "metadata": {"name": name},
            "spec": {
                "userId": user,
                "items": [{"productId": product, "unitPrice": 10_000, "quantity": 1}],
                "paymentTTLSeconds": 600,
            },
        }
    )


async def test_replayed_notification_of_another_release_is_not_refunded_by_this_one(
    saga: SagaEnv, platform: Platform, kube_client: client.ApiClient
) -> None:
    tag = uuid.uuid4().hex[:8]
    ns_a = f"t-{uuid.uuid4().hex[:10]}"
    schema_a = f"t_{tag}_a_op"
    products_a = f"t_{tag}_a_products"
    topology_a = Topology.namespaced(f"a{tag}")
    leaks.made_streams(*topology_a.streams)
    platform.kubectl("create", "namespace", ns_a)
    leaks.made_namespace(ns_a)
    admin = await platform.nats()
    await ensure_streams(admin.jetstream(), topology_a)
    pool_a = await open_database(platform.postgres_dsn, products_a)
    server_a, port_a = await start_grpc_server(
        pool_a, (saga.settings.service_token,), "127.0.0.1:0"
    )
    nc_a = await platform.nats(Role.PRODUCT_SERVICE)
    consumer_a = EventConsumer(nc_a.jetstream(), pool_a, topology_a, name="products")
    await consumer_a.ensure()
    stop_a = asyncio.Event()
    consumer_task = asyncio.create_task(consumer_a.run(stop_a, batch=16))
    op_a = None
    try:
        # Release A: its own namespace, journal, streams, Product service (polling only).
        op_a = await saga.start_operator(
            worker=False,
            notifications=False,
            namespace=ns_a,
            db_schema=schema_a,
            events_namespace=f"a{tag}",
            lease_namespace=ns_a,
            arq_queue=f"arq:test:a{tag}",
            product_service=f"127.0.0.1:{port_a}",
        )
        # Release B: the test's own (namespace, journal, streams, webhook listener).
        await saga.start_operator()
        name = f"order-{uuid.uuid4().hex[:10]}"

        made = await store.create_product(
            pool_a, "owner-a", f"pa-{tag}", f"pa-{tag}", "", 10_000, 3
        )
        p_a = made.id
        platform.kubectl(
            "create", "-f", "-", namespace=ns_a, stdin=checkout_body(name, saga.user_id, p_a)
        )

        async def a_phase(*phases: str) -> bool:
            body = await saga.kube.get(ns_a, name)
            return body is not None and (body.get("status") or {}).get("phase") in phases

        await eventually(lambda: a_phase("AwaitingPayment"), within=30, interval=0.05)

        # B's checkout of the same name (applied by hand): its page is <name>~2.
        p_b = await saga.products.product(price=10_000, stock=3)
        await saga.create(name, items=[(p_b, 10_000, 1)], paymentTTLSeconds=600)
        await saga.wait_phase(name, "AwaitingPayment")
        assert await saga.midtrans_order(name) == f"{name}~2"

        # A's buyer pays A's page; A's poller settles A's checkout, A's stock is sold.
        paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
        assert paid.status_code == 200, paid.text
        genuine = paid.json()["notifications"][-1]["payload"]
        await eventually(lambda: a_phase("Settled"), within=30, interval=0.05)

        async def a_sold() -> bool:
            row = await pool_a.fetchrow("SELECT stock, reserved FROM products WHERE id = $1", p_a)
            return (int(row["stock"]), int(row["reserved"])) == (2, 0)

        await eventually(a_sold, within=30, interval=0.05)
        record_a = await op_a.deps.readmodel.get(name)
        assert record_a is not None and record_a.paid_order_id == name

        # The attacker replays A's genuine notification to B's webhook.
        async with httpx.AsyncClient() as http:
            reply = await http.post(saga.listener_url, json=genuine)
        assert reply.status_code == 200, reply.text
        await eventually(lambda: inbox_drained(saga), within=30, interval=0.05)
        pool_b = saga.operator.deps.returns.pool

        async def b_left_it_alone() -> bool:
            row = await pool_b.fetchrow(
                "SELECT state, returned_how FROM payment_returns WHERE midtrans_order_id = $1",
                name,
            )
            return row is not None and (row["state"], row["returned_how"]) == (
                "closed",
                "not-ours",
            )

        await eventually(b_left_it_alone, within=30, interval=0.05)
        state = await saga.sandbox_state(name)
        # A sold its goods by this payment: nobody may give the money back.
        assert state["refunds"] == [], (
            f"release B refunded release A's sale: {state['transaction_status']}, "
            f"refunds {state['refunds']}; A's checkout is Settled, its stock sold"
        )
    finally:
        if op_a is not None and not op_a.stop.is_set():
            await op_a.shutdown()
        stop_a.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer_task, 10)
        await nc_a.close()
        await server_a.stop(grace=None)
        await pool_a.close()
        js = admin.jetstream()
        for stream in topology_a.streams:
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
        await admin.close()
        conn = await asyncpg.connect(platform.postgres_dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema_a}" CASCADE')
            await conn.execute(f'DROP SCHEMA IF EXISTS "{products_a}" CASCADE')
        finally:
            await conn.close()
        remove_namespace(kube_client, ns_a)
