"""Pods reach the host's Postgres, Redis and NATS at the node's address, and there each
asks for a password (saga_devenv.servers in node mode, as ``up --node`` runs them).

The chart's "external servers" mode depends on it: ``servers.pod_urls`` are its values.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from saga_devenv import node, servers
from saga_devenv.config import DevConfig
from saga_devenv.node_layout import POD_CIDR
from saga_devenv.process import free_port, port_open, read_line
from saga_kit.nats_access import connect
from tests.node.conftest import Cluster
from tests.node.workloads import container, pod

pytestmark = pytest.mark.node

SCRAM_REQUEST = 10  # AuthenticationSASL: the server wants a SCRAM exchange


def _postgres_answer(host: str, port: int, source: str) -> bytes:
    """Postgres' first answer to a startup packet sent from ``source``."""
    body = struct.pack("!i", 3 << 16) + b"user\0saga\0database\0checkout\0\0"
    address = (source, 0)
    with socket.create_connection((host, port), timeout=5, source_address=address) as sock:
        sock.sendall(struct.pack("!i", len(body) + 4) + body)
        return sock.recv(512)


async def test_postgres_at_the_node_address_takes_the_password_only(cluster: Cluster) -> None:
    dsn = servers.pod_urls(cluster.cfg, cluster.node_ip).postgres
    assert f"@{cluster.node_ip}:" in dsn
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == servers.POSTGRES_DB
    finally:
        await conn.close()
    wrong = dsn.replace(servers.postgres_password(cluster.cfg), "wrong")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong)


def test_postgres_asks_pods_for_a_scram_password_and_knows_no_other_source(
    cluster: Cluster,
) -> None:
    """Never trust: the pod network (the bridge's own address is in it) and the node get a
    SCRAM challenge; any other source (here 127.0.0.2) no pg_hba entry at all."""
    port = cluster.cfg.postgres_port
    gateway = str(ipaddress.ip_network(POD_CIDR)[1])
    for source in (gateway, cluster.node_ip):
        answer = _postgres_answer(cluster.node_ip, port, source)
        assert answer[:1] == b"R", (source, answer)
        assert struct.unpack("!i", answer[5:9])[0] == SCRAM_REQUEST, (source, answer)
        assert b"SCRAM-SHA-256" in answer, (source, answer)
    other = _postgres_answer(cluster.node_ip, port, "127.0.0.2")
    assert other[:1] == b"E" and b"no pg_hba.conf entry" in other, other


async def test_redis_at_the_node_address_wants_the_password(cluster: Cluster) -> None:
    with socket.create_connection((cluster.node_ip, cluster.cfg.redis_port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert read_line(sock).startswith(b"-NOAUTH")
    url = servers.pod_urls(cluster.cfg, cluster.node_ip).redis
    assert url.startswith(f"redis://:{cluster.cfg.redis_password}@{cluster.node_ip}:")
    client = aioredis.Redis.from_url(url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_nats_at_the_node_address_refuses_an_unknown_user(cluster: Cluster) -> None:
    with socket.create_connection((cluster.node_ip, cluster.cfg.nats_port), timeout=5) as sock:
        info = json.loads(read_line(sock).removeprefix(b"INFO "))
        assert info["auth_required"] is True
        hello = {"user": "nobody", "pass": "guess", "verbose": False, "pedantic": False}
        sock.sendall(b"CONNECT " + json.dumps(hello).encode() + b"\r\nPING\r\n")
        assert read_line(sock) == b"-ERR 'Authorization Violation'\r\n"
    url = servers.pod_urls(cluster.cfg, cluster.node_ip).nats
    admin = servers.nats_credentials(cluster.cfg, servers.NATS_ADMIN)
    nc = await connect(url, admin, "node-test")
    try:
        assert nc.is_connected
    finally:
        await nc.close()


def test_a_pod_reaches_each_server_at_the_node_address(cluster: Cluster, namespace: str) -> None:
    """nodebox speaks HTTP only, so each server answers it in its own protocol, which
    shows the pod reached it (not refused, not timed out): NATS greets with an INFO that
    wants a user, Postgres hangs up on what is no startup packet, Redis answers -NOAUTH
    and hangs up on the request's `Host:` line (often before its answer leaves)."""
    cluster.apply(namespace, pod("client", container(cluster.image, "pause")))
    cluster.wait(namespace, "condition=Ready", "pod/client")

    def get(port: int) -> str:
        argv = [*node.kubectl(cluster.cfg), f"--namespace={namespace}", "exec", "client"]
        url = f"http://{cluster.node_ip}:{port}/"
        done = subprocess.run(
            [*argv, "--", "/nodebox", "get", url], capture_output=True, text=True, timeout=60
        )
        return done.stderr

    def hung_up(port: int) -> str:
        return f'Get "http://{cluster.node_ip}:{port}/": EOF'

    cfg = cluster.cfg
    redis = get(cfg.redis_port)
    assert "-NOAUTH Authentication required." in redis or hung_up(cfg.redis_port) in redis
    assert '\\"auth_required\\":true' in get(cfg.nats_port)
    assert hung_up(cfg.postgres_port) in get(cfg.postgres_port)


def test_a_start_without_the_node_address_keeps_listening_for_pods(cluster: Cluster) -> None:
    """The main suite's fixtures (servers.start(cfg)) reuse the node-mode servers while
    the node runs, rather than taking them away from its pods."""
    assert servers.start(cluster.cfg) == []
    assert port_open(cluster.cfg.redis_port, cluster.node_ip)


@pytest.fixture
def private_cfg(cluster: Cluster, tmp_path: Path) -> Iterator[DevConfig]:
    """Servers of its own (own run folder, free ports): restarting them disturbs nobody."""
    cfg = dataclasses.replace(
        cluster.cfg,
        run_dir=tmp_path / "run",
        postgres_port=free_port(),
        redis_port=free_port(),
        nats_port=free_port(),
        nats_monitor_port=free_port(),
    )
    try:
        yield cfg
    finally:
        for daemon in reversed(servers.daemons(cfg)):
            daemon.stop()
        shutil.rmtree(servers.postgres_root(cfg), ignore_errors=True)


def test_servers_listen_for_pods_only_while_asked_to(
    cluster: Cluster, private_cfg: DevConfig
) -> None:
    """`up --node` restarts servers that listen on loopback only; a plain start with no
    node (as after `down`) brings them back to loopback only."""
    ports = (private_cfg.postgres_port, private_cfg.redis_port, private_cfg.nats_port)
    assert servers.start(private_cfg) == ["postgres", "redis", "nats"]
    assert not any(port_open(port, cluster.node_ip) for port in ports)

    assert servers.start(private_cfg, cluster.node_ip) == ["postgres", "redis", "nats"]
    assert all(port_open(port, cluster.node_ip) for port in ports)
    assert servers.start(private_cfg, cluster.node_ip) == []

    assert servers.start(private_cfg) == ["postgres", "redis", "nats"]
    assert not any(port_open(port, cluster.node_ip) for port in ports)
    assert all(port_open(port) for port in ports)
