"""The real ``python -m product_service`` process: REST, gRPC and the consumer together."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from checkout.product.v1 import product_pb2, product_pb2_grpc
from saga_kit.events import EventType, Topology, TransactionEvent, ensure_streams, publish
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.nats_access import Role
from saga_kit.settings import Secret
from tests.conftest import Platform
from tests.helpers.processes import free_port, python_module
from tests.integration.user_fixtures import UserEnv


async def test_the_service_process_end_to_end(
    platform: Platform, db_schema: str, service_token: Secret, user_env: UserEnv
) -> None:
    namespace = f"p{uuid.uuid4().hex[:8]}"
    http_port, grpc_port = free_port(), free_port()
    env = {
        "PRODUCT_DATABASE_URL": platform.postgres_dsn,
        "PRODUCT_DB_SCHEMA": db_schema,
        "PRODUCT_NATS_URL": platform.cfg.nats_url,
        **platform.nats_credentials(Role.PRODUCT_SERVICE).as_env(),
        "PRODUCT_USER_SERVICE": user_env.grpc_target,
        "SERVICE_TOKENS": service_token.value,
        "PRODUCT_HTTP_PORT": str(http_port),
        "PRODUCT_GRPC_PORT": str(grpc_port),
        "EVENTS_NAMESPACE": namespace,
    }
    _, token = await user_env.token_for(f"owner{uuid.uuid4().hex[:6]}")
    # The operator's user creates the streams; the service waits for them.
    nc = await platform.nats(Role.OPERATOR)
    js = nc.jetstream()
    topology = Topology.namespaced(namespace)
    await ensure_streams(js, topology)
    with python_module(
        "product_service", port=http_port, health_path="/readyz", env=env, timeout=30
    ) as proc:
        async with httpx.AsyncClient(base_url=proc.base_url) as http:
            created = await http.post(
                "/api/v1/products",
                json={"name": "Teh Tarik", "price": 12_000, "stock": 3},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert created.status_code == 201, created.text
            pid = created.json()["id"]

            channel = authenticated_channel(f"127.0.0.1:{grpc_port}", service_token)
            stub = product_pb2_grpc.ProductServiceStub(channel)
            await stub.Reserve(
                product_pb2.ReserveRequest(
                    transaction_id="order-proc-1",
                    user_id="buyer",
                    items=[product_pb2.ReserveItem(product_id=pid, unit_price=12_000, quantity=2)],
                )
            )
            assert (await http.get(f"/api/v1/products/{pid}")).json()["available"] == 1

            await publish(
                js,
                topology,
                TransactionEvent(transaction_id="order-proc-1", type=EventType.EXPIRED),
            )
            for _ in range(200):
                reservation = await stub.GetReservation(
                    product_pb2.GetReservationRequest(transaction_id="order-proc-1")
                )
                if reservation.status == product_pb2.RESERVATION_STATUS_EXPIRED:
                    break
                await asyncio.sleep(0.05)
            assert reservation.status == product_pb2.RESERVATION_STATUS_EXPIRED
            assert (await http.get(f"/api/v1/products/{pid}")).json()["available"] == 3
            await channel.close()
            await nc.close()
        assert proc.stop() == 0
        log = proc.log(10_000)
    admin = await platform.nats()
    for name in topology.streams:
        await admin.jetstream().delete_stream(name)
    await admin.close()
    nats_password = env["NATS_PASSWORD"]
    for secret in (service_token.value, token, platform.postgres_dsn.split(":")[2].split("@")[0]):
        assert secret not in log
    assert nats_password not in log
