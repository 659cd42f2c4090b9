"""The real ``python -m product_service`` process: REST, gRPC and the consumer together."""

from __future__ import annotations

import uuid

import httpx

from checkout.product.v1 import product_pb2, product_pb2_grpc
from saga_kit.events import EventType, TransactionEvent, ensure_streams, publish
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.nats_access import Role
from saga_kit.settings import Secret
from tests.conftest import Platform
from tests.helpers.processes import python_module
from tests.helpers.waiting import eventually
from tests.integration.product_event_fixtures import listed_and_reserved, service_process
from tests.integration.user_fixtures import UserEnv


async def test_the_service_process_end_to_end(
    platform: Platform, db_schema: str, service_token: Secret, user_env: UserEnv
) -> None:
    service = service_process(platform, db_schema, service_token, user_env)
    env, topology = service.env, service.topology
    _, token = await user_env.token_for(f"owner{uuid.uuid4().hex[:6]}")
    # The operator's user creates the streams; the service waits for them.
    nc = await platform.nats(Role.OPERATOR)
    js = nc.jetstream()
    await ensure_streams(js, topology)
    with python_module(
        "product_service", port=service.http_port, health_path="/readyz", env=env, timeout=30
    ) as proc:
        async with httpx.AsyncClient(base_url=proc.base_url) as http:
            channel = authenticated_channel(f"127.0.0.1:{service.grpc_port}", service_token)
            stub = product_pb2_grpc.ProductServiceStub(channel)
            pid = await listed_and_reserved(http, stub, token, "order-proc-1", price=12_000)
            assert (await http.get(f"/api/v1/products/{pid}")).json()["available"] == 1

            await publish(
                js,
                topology,
                TransactionEvent(transaction_id="order-proc-1", type=EventType.EXPIRED),
            )

            async def expired() -> bool:
                reservation = await stub.GetReservation(
                    product_pb2.GetReservationRequest(transaction_id="order-proc-1")
                )
                return bool(reservation.status == product_pb2.RESERVATION_STATUS_EXPIRED)

            await eventually(expired, within=15, interval=0.05)
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
