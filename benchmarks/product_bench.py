"""Product service benchmark: Reserve on one hot product, and event throughput.

Starts (or reuses) the local Postgres and NATS, runs the real Product service as
its own process (``python -m product_service``) on a fresh schema and event
namespace, then:
1. CALLERS concurrent gRPC clients reserve 1 unit of the same product, REQUESTS
   times in all: throughput and latency percentiles;
2. publishes one ``committed`` event per reservation and times the consumer
   until every one is applied: events per second.

    .venv/bin/python benchmarks/product_bench.py [--callers 100] [--requests 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid

import asyncpg

from checkout.product.v1 import product_pb2, product_pb2_grpc
from saga_devenv import servers
from saga_devenv.config import DevConfig
from saga_devenv.process import free_port, port_open
from saga_kit.events import EventType, Topology, TransactionEvent, ensure_streams, publish
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.nats_access import Role, connect
from saga_kit.settings import Secret


async def wait_port(port: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} never opened")
        await asyncio.sleep(0.1)


async def main(callers: int, requests: int) -> None:
    cfg = DevConfig.from_env()
    servers.start(cfg)
    dsn = servers.postgres_dsn(cfg)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    namespace = f"bench{uuid.uuid4().hex[:6]}"
    token = Secret(uuid.uuid4().hex)
    grpc_port, http_port = free_port(), free_port()
    # The streams are the operator's to create (the service waits for them); the
    # local admin user stands in for it, publishes the events and cleans up.
    admin = servers.nats_credentials(cfg, servers.NATS_ADMIN)
    nc = await connect(cfg.nats_url, admin, "product-bench")
    js = nc.jetstream()
    topology = Topology.namespaced(namespace)
    await ensure_streams(js, topology)
    env = {
        **os.environ,
        "PRODUCT_DATABASE_URL": dsn,
        "PRODUCT_DB_SCHEMA": schema,
        "PRODUCT_NATS_URL": cfg.nats_url,
        **servers.nats_credentials(cfg, Role.PRODUCT_SERVICE).as_env(),
        "SERVICE_TOKENS": token.value,
        "PRODUCT_GRPC_PORT": str(grpc_port),
        "PRODUCT_HTTP_PORT": str(http_port),
        "EVENTS_NAMESPACE": namespace,
    }
    service = subprocess.Popen(  # noqa: ASYNC220 (started once, before the measurement)
        [sys.executable, "-m", "product_service"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    conn = None
    try:
        await wait_port(grpc_port)
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        product_id = str(uuid.uuid4())
        await conn.execute(
            "INSERT INTO products (id, owner_id, name, slug, price, stock)"
            " VALUES ($1, 'bench', 'hot', 'hot', 1000, $2)",
            product_id,
            requests * 2,
        )
        channel = authenticated_channel(f"127.0.0.1:{grpc_port}", token)
        stub = product_pb2_grpc.ProductServiceStub(channel)
        queue: asyncio.Queue[str] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(f"bench-{i}")
        latencies: list[float] = []

        async def caller(calls: int | None = None) -> None:
            while not queue.empty() and (calls is None or calls > 0):
                calls = None if calls is None else calls - 1
                tx = queue.get_nowait()
                began = time.perf_counter()
                await stub.Reserve(
                    product_pb2.ReserveRequest(
                        transaction_id=tx,
                        user_id="bench",
                        items=[
                            product_pb2.ReserveItem(
                                product_id=product_id, unit_price=1000, quantity=1
                            )
                        ],
                    )
                )
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(caller(calls=1) for _ in range(3)))  # warm up the channel
        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.perf_counter() - began
        measured = latencies[3:] if len(latencies) > 3 else latencies
        q = statistics.quantiles(measured, n=100)
        reserved = await conn.fetchval("SELECT reserved FROM products WHERE id = $1", product_id)
        print(f"reserve: {len(measured)} calls, {callers} concurrent callers, one hot product")
        print(f"  throughput  {len(measured) / elapsed:8.0f} reserves/s")
        print(
            f"  latency ms  p50 {q[49] * 1000:.1f}  p90 {q[89] * 1000:.1f}  "
            f"p99 {q[98] * 1000:.1f}  max {max(measured) * 1000:.1f}"
        )
        print(f"  reserved units {reserved} (expected {requests})")

        began = time.perf_counter()
        for i in range(requests):
            event = TransactionEvent(transaction_id=f"bench-{i}", type=EventType.COMMITTED)
            await publish(js, topology, event)
        published = time.perf_counter() - began
        # Poll the database: the consumer runs in another process.
        while await conn.fetchval("SELECT count(*) FROM reservation_events") < requests:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - began
        applied = await conn.fetchval(
            "SELECT count(*) FROM reservations WHERE status = 'committed'"
        )
        print(f"events: {requests} committed events (published in {published:.1f}s)")
        print(f"  consumer    {requests / elapsed:8.0f} events/s applied end to end")
        print(f"  applied     {applied} (expected {requests})")
        await channel.close()
    finally:
        service.terminate()
        service.wait(timeout=30)
        for name in topology.streams:
            with contextlib.suppress(Exception):  # best-effort clean-up
                await js.delete_stream(name)
        await nc.close()
        if conn is not None:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callers", type=int, default=100)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    asyncio.run(main(args.callers, args.requests))
