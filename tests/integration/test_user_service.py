"""The User service on the real Postgres and Redis: REST in-process, gRPC on a real
grpc.aio server on loopback, and the real ``python -m user_service`` process."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import jwt
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2

from checkout.user.v1 import user_pb2, user_pb2_grpc
from saga_kit import access_tokens
from saga_kit.access_tokens import ISSUER, SigningKey, new_private_key_pem
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.grpc_errors import ErrorDetails, error_details
from saga_kit.settings import Secret
from tests.conftest import Platform
from tests.helpers.processes import free_port, python_module
from tests.helpers.waiting import budget
from user_service.app import (
    RunningGrpcServer,
    UserServiceRuntime,
    create_rest_app,
    open_runtime,
    start_grpc_server,
)
from user_service.config import UserServiceConfig
from user_service.domain import verify_password

REPO = Path(__file__).resolve().parents[2]
TTL = 600
PASSWORD = "s3cret-passw0rd"
GRPC_DOMAIN = "user.checkout.saga.dev"


def _config(platform: Platform, schema: str, service_token: Secret) -> UserServiceConfig:
    return UserServiceConfig(
        database_url=Secret(platform.postgres_dsn),
        db_schema=schema,
        redis_url=Secret(platform.cfg.redis_url),
        signing_keys=Secret(new_private_key_pem()),
        token_ttl_seconds=TTL,
        http_host="127.0.0.1",
        http_port=0,
        grpc_host="127.0.0.1",
        grpc_port=0,
        service_tokens=(service_token,),
    )


def _sign(key: SigningKey, claims: dict[str, Any], kid: str | None = None) -> str:
    return jwt.encode(claims, key.private, algorithm="EdDSA", headers={"kid": kid or key.kid})


@pytest.fixture
async def runtime(
    platform: Platform, db_schema: str, service_token: Secret
) -> AsyncIterator[UserServiceRuntime]:
    rt = await open_runtime(_config(platform, db_schema, service_token))
    yield rt
    await rt.close()


@pytest.fixture
async def http(runtime: UserServiceRuntime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_rest_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://user-service") as client:
        yield client


@pytest.fixture
async def grpc_server(runtime: UserServiceRuntime) -> AsyncIterator[RunningGrpcServer]:
    server = await start_grpc_server(runtime, "127.0.0.1", 0)
    yield server
    await server.stop(0)


@pytest.fixture
async def stub(
    grpc_server: RunningGrpcServer, service_token: Secret
) -> AsyncIterator[user_pb2_grpc.UserServiceAsyncStub]:
    channel = authenticated_channel(f"127.0.0.1:{grpc_server.port}", service_token)
    yield user_pb2_grpc.UserServiceStub(channel)
    await channel.close()


async def _register(
    http: httpx.AsyncClient, username: str = "alice", email: str = "alice@example.com"
) -> dict[str, Any]:
    reply = await http.post(
        "/api/v1/users", json={"username": username, "email": email, "password": PASSWORD}
    )
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def _login(http: httpx.AsyncClient, username: str = "alice") -> dict[str, Any]:
    reply = await http.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _reason(reply: httpx.Response) -> str:
    reason: str = reply.json()["reason"]
    return reason


async def _grpc_refusal(call: Any) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return error_details(caught.value)


# --- REST ----------------------------------------------------------------------


async def test_register_login_me_logout(
    http: httpx.AsyncClient, runtime: UserServiceRuntime, platform: Platform
) -> None:
    user = await _register(http, "Alice", "Alice@Example.com")
    assert set(user) == {"id", "username", "email", "created_at"}  # never the hash
    assert (user["username"], user["email"]) == ("alice", "alice@example.com")
    assert uuid.UUID(user["id"]).version == 4

    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    token = await _login(http, "ALICE")
    assert token["token_type"] == "bearer"
    assert TTL - 5 <= token["expires_in"] <= TTL
    expires_at = dt.datetime.fromisoformat(token["expires_at"])
    assert (
        before + dt.timedelta(seconds=TTL) <= expires_at <= before + dt.timedelta(seconds=TTL + 5)
    )
    (key,) = runtime.config.load_keys()
    assert jwt.get_unverified_header(token["access_token"])["kid"] == key.kid
    claims = jwt.decode(
        token["access_token"], key.public, algorithms=["EdDSA"], issuer="checkout-saga-user"
    )
    assert (claims["sub"], claims["preferred_username"]) == (user["id"], "alice")
    assert claims["exp"] == int(expires_at.timestamp())

    by_email = await http.post(
        "/api/v1/auth/login", json={"email": "ALICE@example.COM", "password": PASSWORD}
    )
    assert by_email.status_code == 200, by_email.text

    me = await http.get("/api/v1/users/me", headers=_bearer(token["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json() == user

    out = await http.post("/api/v1/auth/logout", headers=_bearer(token["access_token"]))
    assert out.status_code == 204 and out.content == b""
    redis = aioredis.Redis.from_url(platform.cfg.redis_url)
    try:
        ttl = await redis.ttl(f"user:revoked:{claims['jti']}")
    finally:
        await redis.aclose()
    # kept as long as any verifier would accept the token, its clock up to CLOCK_SKEW behind
    lifetime = TTL + access_tokens.EXPIRY_LEEWAY.seconds + access_tokens.CLOCK_SKEW.seconds
    assert lifetime - 10 <= ttl <= lifetime

    again = await http.get("/api/v1/users/me", headers=_bearer(token["access_token"]))
    assert again.status_code == 401
    assert _reason(again) == "TOKEN_REVOKED"
    assert again.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    # The other session (logged in by email) is not affected.
    still = await http.get("/api/v1/users/me", headers=_bearer(by_email.json()["access_token"]))
    assert still.status_code == 200


async def test_duplicate_username_or_email_is_a_conflict_whatever_the_case(
    http: httpx.AsyncClient,
) -> None:
    await _register(http, "alice", "alice@example.com")
    for username, email, reason in [
        ("alice", "other@example.com", "USERNAME_TAKEN"),
        ("ALIce", "other@example.com", "USERNAME_TAKEN"),
        ("bob", "alice@example.com", "EMAIL_TAKEN"),
        ("bob", "Alice@EXAMPLE.com", "EMAIL_TAKEN"),
    ]:
        reply = await http.post(
            "/api/v1/users", json={"username": username, "email": email, "password": PASSWORD}
        )
        assert reply.status_code == 409, (username, email, reply.text)
        assert reply.json()["reason"] == reason
        assert reply.json()["detail"]


async def test_concurrent_identical_registrations_create_one_user(
    http: httpx.AsyncClient, runtime: UserServiceRuntime
) -> None:
    body = {"username": "racer", "email": "racer@example.com", "password": PASSWORD}
    replies = await asyncio.gather(*(http.post("/api/v1/users", json=body) for _ in range(10)))
    codes = sorted(r.status_code for r in replies)
    assert codes == [201] + [409] * 9, [r.text for r in replies]
    assert {_reason(r) for r in replies if r.status_code == 409} <= {
        "USERNAME_TAKEN",
        "EMAIL_TAKEN",
    }
    assert await runtime.pool.fetchval("SELECT count(*) FROM users") == 1


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"username": "ab"}, "username"),
        ({"username": "x" * 33}, "username"),
        ({"username": "bad name!"}, "username"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"password": "short-7"}, "password"),
        ({"password": "p" * 129}, "password"),
        ({"password": None}, "password"),
        ({"email": None}, "email"),
        ({"username": 42}, "username"),
    ],
)
async def test_invalid_registrations_are_422_naming_the_field(
    http: httpx.AsyncClient, runtime: UserServiceRuntime, patch: dict[str, Any], field: str
) -> None:
    body: dict[str, Any] = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    body.update(patch)
    body = {k: v for k, v in body.items() if v is not None}
    reply = await http.post("/api/v1/users", json=body)
    assert reply.status_code == 422, reply.text
    locations = [error["loc"] for error in reply.json()["errors"]]
    assert ["body", field] in locations, locations
    if field == "password" and "password" in body:
        assert body["password"] not in reply.text  # a rejected password is not echoed
    assert await runtime.pool.fetchval("SELECT count(*) FROM users") == 0


async def test_wrong_password_and_unknown_user_get_the_same_401(http: httpx.AsyncClient) -> None:
    await _register(http)
    attempts = [
        {"username": "alice", "password": "wrong-password"},
        {"username": "nobody", "password": PASSWORD},
        {"email": "alice@example.com", "password": "wrong-password"},
        {"email": "nobody@example.com", "password": PASSWORD},
    ]
    replies = [await http.post("/api/v1/auth/login", json=body) for body in attempts]
    assert [r.status_code for r in replies] == [401] * 4
    assert len({r.content for r in replies}) == 1, [r.text for r in replies]
    assert _reason(replies[0]) == "INVALID_CREDENTIALS"
    assert {r.headers["WWW-Authenticate"] for r in replies} == {"Bearer"}
    both = await http.post(
        "/api/v1/auth/login",
        json={"username": "alice", "email": "alice@example.com", "password": PASSWORD},
    )
    assert both.status_code == 422


async def test_password_is_stored_as_a_salted_scrypt_hash(
    http: httpx.AsyncClient, platform: Platform, db_schema: str
) -> None:
    user = await _register(http)
    conn = await asyncpg.connect(platform.postgres_dsn, server_settings={"search_path": db_schema})
    try:
        row = await conn.fetchrow("SELECT * FROM users WHERE id = $1", user["id"])
    finally:
        await conn.close()
    assert row is not None
    stored = row["password_hash"]
    assert stored != PASSWORD and PASSWORD not in stored
    assert stored.startswith("scrypt$32768$8$3$")
    assert verify_password(PASSWORD, stored)
    assert not verify_password(PASSWORD + "x", stored)
    assert (row["username"], row["email"]) == ("alice", "alice@example.com")


async def test_bad_tokens_over_rest_are_401_with_a_reason(
    http: httpx.AsyncClient, runtime: UserServiceRuntime
) -> None:
    missing = await http.get("/api/v1/users/me")
    assert missing.status_code == 401 and _reason(missing) == "TOKEN_MISSING"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    basic = await http.get("/api/v1/users/me", headers={"Authorization": "Basic YTpi"})
    assert basic.status_code == 401 and _reason(basic) == "TOKEN_MISSING"

    user = await _register(http)
    now = int(time.time())
    expired = _sign(
        runtime.config.load_keys()[0],
        {
            "iss": ISSUER,
            "sub": user["id"],
            "preferred_username": "alice",
            "jti": "j-1",
            "iat": now - 120,
            "exp": now - 60,
        },
    )
    for token, reason in [("garbage", "TOKEN_INVALID"), (expired, "TOKEN_EXPIRED")]:
        for method, path in [("GET", "/api/v1/users/me"), ("POST", "/api/v1/auth/logout")]:
            reply = await http.request(method, path, headers=_bearer(token))
            assert reply.status_code == 401, (method, path, reply.text)
            assert _reason(reply) == reason
            assert reply.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


async def test_health_and_readiness(http: httpx.AsyncClient) -> None:
    live = await http.get("/healthz")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"postgres": True, "redis": True}}


async def test_an_unreachable_redis_fails_readiness_and_refuses_to_authenticate(
    platform: Platform, db_schema: str, service_token: Secret
) -> None:
    config = _config(platform, db_schema, service_token)
    dead = free_port()  # a port nobody listens on
    broken = dataclasses.replace(config, redis_url=Secret(f"redis://127.0.0.1:{dead}/0"))
    rt = await open_runtime(broken)
    try:
        transport = httpx.ASGITransport(app=create_rest_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://u") as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"] == {"postgres": True, "redis": False}
            await _register(client)
            token = await _login(client)
            # Revocation cannot be checked: refuse with 503, never let the token through.
            me = await client.get("/api/v1/users/me", headers=_bearer(token["access_token"]))
            assert me.status_code == 503 and _reason(me) == "STORE_UNAVAILABLE"
        server = await start_grpc_server(rt, "127.0.0.1", 0)
        try:
            async with authenticated_channel(f"127.0.0.1:{server.port}", service_token) as channel:
                call = user_pb2_grpc.UserServiceStub(channel).Authenticate(
                    user_pb2.AuthenticateRequest(access_token=token["access_token"]), timeout=5
                )
                details = await _grpc_refusal(call)
            # Retryable, and not UNAUTHENTICATED: a Redis outage must not log users out.
            assert (details.code, details.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "STORE_UNAVAILABLE",
            )
        finally:
            await server.stop(0)
    finally:
        await rt.close()


# --- gRPC ----------------------------------------------------------------------


async def test_authenticate_returns_the_user_and_expiry(
    http: httpx.AsyncClient, stub: user_pb2_grpc.UserServiceAsyncStub
) -> None:
    user = await _register(http)
    token = await _login(http)
    reply = await stub.Authenticate(
        user_pb2.AuthenticateRequest(access_token=token["access_token"]), timeout=5
    )
    assert (reply.user.id, reply.user.username, reply.user.email) == (
        user["id"],
        "alice",
        "alice@example.com",
    )
    assert reply.expires_at.ToDatetime(dt.UTC) == dt.datetime.fromisoformat(token["expires_at"])


async def test_authenticate_refuses_bad_tokens_with_a_reason(
    http: httpx.AsyncClient,
    stub: user_pb2_grpc.UserServiceAsyncStub,
    runtime: UserServiceRuntime,
) -> None:
    user = await _register(http)
    now = int(time.time())
    (key,) = runtime.config.load_keys()
    claims = {
        "iss": ISSUER,
        "sub": user["id"],
        "preferred_username": "alice",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 60,
    }
    revoked = (await _login(http))["access_token"]
    assert (await http.post("/api/v1/auth/logout", headers=_bearer(revoked))).status_code == 204
    cases = {
        "bad signature": (_sign(_other_key(), claims, kid=key.kid), "TOKEN_INVALID"),
        "garbage": ("garbage", "TOKEN_INVALID"),
        "empty": ("", "TOKEN_INVALID"),
        "expired": (
            _sign(key, {**claims, "iat": now - 120, "exp": now - 60}),
            "TOKEN_EXPIRED",
        ),
        "revoked after logout": (revoked, "TOKEN_REVOKED"),
    }
    for name, (token, reason) in cases.items():
        details = await _grpc_refusal(
            stub.Authenticate(user_pb2.AuthenticateRequest(access_token=token), timeout=5)
        )
        assert details.code == grpc.StatusCode.UNAUTHENTICATED, name
        assert (details.reason, details.domain) == (reason, GRPC_DOMAIN), name
    # The same claims signed with the right key do authenticate: the refusals above
    # are about the token, not the user.
    good = await stub.Authenticate(user_pb2.AuthenticateRequest(access_token=_sign(key, claims)))
    assert good.user.id == user["id"]


def _other_key() -> SigningKey:
    return access_tokens.load_signing_keys(new_private_key_pem())[0]


async def test_list_signing_keys_publishes_the_public_keys_tokens_verify_with(
    http: httpx.AsyncClient,
    stub: user_pb2_grpc.UserServiceAsyncStub,
    runtime: UserServiceRuntime,
) -> None:
    await _register(http)
    token = (await _login(http))["access_token"]
    reply = await stub.ListSigningKeys(user_pb2.ListSigningKeysRequest(), timeout=5)
    published = {k.kid: access_tokens.load_public_key(k.public_key_pem) for k in reply.keys}
    assert [k.algorithm for k in reply.keys] == ["EdDSA"]
    assert [k.kid for k in runtime.config.load_keys()] == list(published)
    claims = access_tokens.verify(token, published, dt.datetime.now(dt.UTC))
    assert claims.username == "alice"
    assert "PRIVATE" not in reply.keys[0].public_key_pem


async def test_get_user(http: httpx.AsyncClient, stub: user_pb2_grpc.UserServiceAsyncStub) -> None:
    user = await _register(http)
    reply = await stub.GetUser(user_pb2.GetUserRequest(id=user["id"]), timeout=5)
    assert (reply.user.id, reply.user.username, reply.user.email) == (
        user["id"],
        "alice",
        "alice@example.com",
    )
    missing_id = str(uuid.uuid4())
    missing = await _grpc_refusal(stub.GetUser(user_pb2.GetUserRequest(id=missing_id), timeout=5))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert (missing.reason, missing.domain) == ("USER_NOT_FOUND", GRPC_DOMAIN)
    assert missing.metadata == {"user_id": missing_id}
    legacy = await _grpc_refusal(stub.GetUser(user_pb2.GetUserRequest(id="42"), timeout=5))
    assert legacy.code == grpc.StatusCode.NOT_FOUND  # not a uuid: still just "no such user"
    empty = await _grpc_refusal(stub.GetUser(user_pb2.GetUserRequest(id=""), timeout=5))
    assert empty.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "id" in empty.field_violations


async def test_calls_without_the_service_token_are_unauthenticated(
    http: httpx.AsyncClient, grpc_server: RunningGrpcServer
) -> None:
    await _register(http)
    token = (await _login(http))["access_token"]
    target = f"127.0.0.1:{grpc_server.port}"
    for channel in [
        grpc.aio.insecure_channel(target),
        authenticated_channel(target, Secret("not-the-service-token")),
    ]:
        try:
            client = user_pb2_grpc.UserServiceStub(channel)
            for call in [
                client.Authenticate(user_pb2.AuthenticateRequest(access_token=token), timeout=5),
                client.GetUser(user_pb2.GetUserRequest(id="x"), timeout=5),
            ]:
                details = await _grpc_refusal(call)
                assert details.code == grpc.StatusCode.UNAUTHENTICATED
                assert "service credential" in details.message
        finally:
            await channel.close()


async def test_health_answers_without_a_token(grpc_server: RunningGrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        # A plain call rather than HealthStub: the typeshed stub of HealthStub declares
        # no methods, and this is also exactly what a kubelet gRPC probe sends.
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        for service in ["", "checkout.user.v1.UserService"]:
            reply = await check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        unknown = await _grpc_refusal(check(health_pb2.HealthCheckRequest(service="nope")))
        assert unknown.code == grpc.StatusCode.NOT_FOUND


# --- the real process --------------------------------------------------------------


async def test_the_process_serves_both_apis_and_stops_cleanly_on_sigterm(
    platform: Platform, db_schema: str, service_token: Secret, tmp_path: Path
) -> None:
    signing_key = new_private_key_pem()
    (tmp_path / "keys").write_text(signing_key)
    http_port, grpc_port = free_port(), free_port()
    env = {
        "USER_DATABASE_URL": platform.postgres_dsn,
        "USER_DB_SCHEMA": db_schema,
        "USER_REDIS_URL": platform.cfg.redis_url,
        "USER_SIGNING_KEYS_FILE": str(tmp_path / "keys"),
        "USER_TOKEN_TTL_SECONDS": "120",
        "USER_HTTP_PORT": str(http_port),
        "USER_GRPC_PORT": str(grpc_port),
        "SERVICE_TOKENS": f"rotated-out-token,{service_token.value}",
    }
    with python_module(
        "user_service",
        port=http_port,
        health_path="/readyz",
        env=env,
        log_dir=tmp_path,
        timeout=30,
    ) as proc:
        async with httpx.AsyncClient(base_url=proc.base_url) as client:
            await _register(client)
            token = (await _login(client))["access_token"]
        async with authenticated_channel(f"127.0.0.1:{grpc_port}", service_token) as channel:
            reply = await user_pb2_grpc.UserServiceStub(channel).Authenticate(
                user_pb2.AuthenticateRequest(access_token=token), timeout=5
            )
            assert reply.user.username == "alice"

        # 0: it stopped by itself on SIGTERM (a SIGKILL after the budget would be -9).
        code = await asyncio.to_thread(proc.stop, budget(15.0))
        assert code == 0, proc.log()
    log = proc.log_path

    output = await asyncio.to_thread(log.read_text)
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert any(entry["msg"] == "stopped" for entry in lines), output
    dsn_password = platform.postgres_dsn.split(":")[2].split("@")[0]
    key_body = signing_key.splitlines()[1]
    for secret in [PASSWORD, token, key_body, service_token.value, dsn_password]:
        assert secret not in output
