"""The checkout API checks access tokens itself (issue 12): the User service's published
keys, revocations read from Redis. Real User service, Redis and API app (in-process)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
import redis.asyncio as aioredis

from checkout_api.app import ApiDeps
from saga_kit.access_tokens import ISSUER, SigningKey, load_signing_keys, new_private_key_pem
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.signing_keys import PublishedKeys
from saga_kit.user_auth import LocalAuthenticator
from tests.helpers.processes import free_port
from tests.integration import test_checkout_api
from tests.integration.saga_fixtures import SagaEnv

CHECKOUTS = "/api/v1/checkouts"
api = test_checkout_api.api  # the API app with every real dependency (its own fixture)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def keys(saga: SagaEnv, clock: Clock) -> AsyncIterator[PublishedKeys]:
    channel = authenticated_channel(saga.users.grpc_target, saga.settings.service_token)
    yield PublishedKeys(channel, min_interval=10.0, clock=clock)
    await channel.close()


@pytest.fixture
async def local(
    saga: SagaEnv,
    api: tuple[httpx.AsyncClient, ApiDeps],
    keys: PublishedKeys,
) -> AsyncIterator[httpx.AsyncClient]:
    """The API app, checking tokens as ``python -m checkout_api`` does."""
    http, deps = api
    redis = aioredis.Redis.from_url(saga.settings.redis_url.value)
    deps.authenticator = LocalAuthenticator(keys, redis)
    yield http
    await redis.aclose()


async def _bearer(saga: SagaEnv) -> dict[str, str]:
    _, token = await saga.users.token_for(f"t{uuid.uuid4().hex[:8]}")
    return {"Authorization": f"Bearer {token}"}


def _crafted(key: SigningKey, kid: str | None = None, **claims: Any) -> dict[str, str]:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "sub": str(uuid.uuid4()),
        "preferred_username": "mallory",
        "jti": str(uuid.uuid4()),
        "iat": now - 10,
        "exp": now + 600,
        **claims,
    }
    token = jwt.encode(payload, key.private, algorithm="EdDSA", headers={"kid": kid or key.kid})
    return {"Authorization": f"Bearer {token}"}


def _refused(reply: httpx.Response, reason: str) -> None:
    assert reply.status_code == 401, reply.text
    assert reply.json()["reason"] == reason
    assert reply.headers["WWW-Authenticate"] == "Bearer"


async def test_valid_tokens_are_accepted_with_the_user_service_stopped(
    saga: SagaEnv, local: httpx.AsyncClient, keys: PublishedKeys
) -> None:
    auth = await _bearer(saga)
    assert (await local.get(CHECKOUTS, headers=auth)).status_code == 200
    await saga.users.grpc_server.stop(0)
    # A token it has not seen before, too: no question to the User service is needed.
    other = await _bearer(saga)
    for headers in (auth, other, auth):
        reply = await local.get(CHECKOUTS, headers=headers)
        assert reply.status_code == 200, reply.text
    assert keys.fetches == 1


async def test_a_logout_is_refused_at_the_next_request(
    saga: SagaEnv, local: httpx.AsyncClient
) -> None:
    auth = await _bearer(saga)
    assert (await local.get(CHECKOUTS, headers=auth)).status_code == 200
    out = await saga.users.http.post("/api/v1/auth/logout", headers=auth)
    assert out.status_code == 204, out.text
    _refused(await local.get(CHECKOUTS, headers=auth), "TOKEN_REVOKED")


async def test_forged_and_expired_tokens_are_refused(
    saga: SagaEnv, local: httpx.AsyncClient
) -> None:
    ours = saga.users.signing_key
    (other,) = load_signing_keys(new_private_key_pem())
    past = int(time.time()) - 100
    # Another key, naming the User service's key or its own: never accepted.
    _refused(await local.get(CHECKOUTS, headers=_crafted(other, kid=ours.kid)), "TOKEN_INVALID")
    _refused(await local.get(CHECKOUTS, headers=_crafted(other)), "TOKEN_INVALID")
    expired = _crafted(ours, iat=past - 60, exp=past)
    _refused(await local.get(CHECKOUTS, headers=expired), "TOKEN_EXPIRED")
    # The same claims with a live exp are accepted: the refusals were about the token.
    assert (await local.get(CHECKOUTS, headers=_crafted(ours))).status_code == 200


async def test_an_unknown_kid_fetches_the_keys_once_per_interval(
    saga: SagaEnv, local: httpx.AsyncClient, keys: PublishedKeys, clock: Clock
) -> None:
    auth = await _bearer(saga)
    # Nothing fetched yet (the User service was down when the API started): twenty
    # requests at once share one fetch.
    replies = await asyncio.gather(*(local.get(CHECKOUTS, headers=auth) for _ in range(20)))
    assert [r.status_code for r in replies] == [200] * 20
    assert keys.fetches == 1
    # Tokens naming keys the User service does not have: one more fetch per interval.
    strangers = [load_signing_keys(new_private_key_pem())[0] for _ in range(3)]
    for stranger in strangers:
        _refused(await local.get(CHECKOUTS, headers=_crafted(stranger)), "TOKEN_INVALID")
    assert keys.fetches == 1  # fetched less than min_interval ago
    clock.now += 11
    for stranger in strangers:
        _refused(await local.get(CHECKOUTS, headers=_crafted(stranger)), "TOKEN_INVALID")
    assert keys.fetches == 2


async def test_redis_unreachable_is_503_never_a_pass_nor_a_500(
    saga: SagaEnv,
    api: tuple[httpx.AsyncClient, ApiDeps],
    keys: PublishedKeys,
) -> None:
    http, deps = api
    auth = await _bearer(saga)
    gone = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1, socket_connect_timeout=1
    )
    deps.authenticator = LocalAuthenticator(keys, gone)
    try:
        reply = await http.get(CHECKOUTS, headers=auth)
    finally:
        await gone.aclose()
    assert reply.status_code == 503, reply.text
    assert reply.json()["reason"] == "USER_SERVICE_UNAVAILABLE"
    assert int(reply.headers["Retry-After"]) >= 1
    assert keys.fetches == 1  # the signature was checked: only the revocation list was missing
