"""Who is calling a REST API: bearer tokens, checked locally or by the User service.

:class:`LocalAuthenticator` (the checkout API) verifies the token's signature with
the User service's published public keys (:mod:`saga_kit.signing_keys`) and asks
Redis whether it was revoked: one EXISTS per request, no User service round trip,
and a logout takes effect on the next request. The User service being down no
longer fails valid tokens; Redis being down fails every token with the same error
the User service being down gives (an AioRpcError, answered 503 + Retry-After),
never lets one in.

:class:`UserServiceAuthenticator` asks the User service (``Authenticate``) instead,
and :class:`RememberingAuthenticator` remembers its answers for a few seconds: the
Product service's owner API, with no Redis of its own, uses the two.

Either way an :class:`AuthError` is a refusal (401) and a ``grpc.aio.AioRpcError``
an outage (503).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
import redis.asyncio as aioredis
import redis.exceptions

from checkout.user.v1 import user_pb2, user_pb2_grpc
from saga_kit import access_tokens
from saga_kit.access_tokens import TokenFailure, TokenRefused, revoked_key
from saga_kit.grpc_errors import error_details
from saga_kit.signing_keys import PublishedKeys


@dataclass(frozen=True)
class Identity:
    user_id: str
    username: str


class AuthError(Exception):
    """The bearer token is missing, invalid, expired or revoked."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Authenticator(Protocol):
    async def authenticate(self, access_token: str) -> Identity: ...


class TokenChecker(Protocol):
    async def check(self, access_token: str) -> tuple[Identity, float]: ...


class RevocationsUnavailable(grpc.aio.AioRpcError):
    """Redis, where the User service lists revoked tokens, did not answer. An
    AioRpcError (UNAVAILABLE) so every REST API answers it as it answers the User
    service being down (503, retry), without knowing where tokens are checked."""

    def __init__(self, cause: BaseException) -> None:
        empty = grpc.aio.Metadata()
        super().__init__(
            grpc.StatusCode.UNAVAILABLE,
            empty,
            empty,
            details=f"the revoked-token list is unavailable: {type(cause).__name__}",
        )


_REDIS_OUTAGES = (redis.exceptions.RedisError, OSError, TimeoutError)


class LocalAuthenticator:
    """Verifies tokens here: signature (published keys), claims, and revocation."""

    def __init__(
        self,
        keys: PublishedKeys,
        redis_client: aioredis.Redis,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._keys = keys
        self._redis = redis_client
        self._clock = clock

    async def authenticate(self, access_token: str) -> Identity:
        kid = access_tokens.key_id_of(access_token)
        public = await self._keys.get(kid) if kid else None
        if public is None:
            raise AuthError(
                TokenFailure.INVALID, "the access token is malformed or signed by an unknown key"
            )
        try:
            claims = access_tokens.verify(access_token, {kid: public}, self._clock())
        except TokenRefused as exc:
            raise AuthError(exc.failure, exc.message) from exc
        try:
            revoked = await self._redis.exists(revoked_key(claims.jti))
        except _REDIS_OUTAGES as exc:
            raise RevocationsUnavailable(exc) from exc
        if revoked:
            raise AuthError(TokenFailure.REVOKED, "the access token has been revoked")
        return Identity(user_id=claims.user_id, username=claims.username)


class UserServiceAuthenticator:
    """Asks the User service (``Authenticate``) on every request: revocation is instant."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float = 3.0) -> None:
        self._stub = user_pb2_grpc.UserServiceStub(channel)
        self._timeout = timeout

    async def authenticate(self, access_token: str) -> Identity:
        identity, _ = await self.check(access_token)
        return identity

    async def check(self, access_token: str) -> tuple[Identity, float]:
        """The caller and how many seconds the token stays valid."""
        try:
            reply = await self._stub.Authenticate(
                user_pb2.AuthenticateRequest(access_token=access_token), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            details = error_details(exc)
            if details.code == grpc.StatusCode.UNAUTHENTICATED:
                raise AuthError(details.reason or "TOKEN_INVALID", details.message) from exc
            raise
        identity = Identity(user_id=reply.user.id, username=reply.user.username)
        expires_in = reply.expires_at.seconds - time.time() if reply.HasField("expires_at") else 0
        return identity, expires_in


class RememberingAuthenticator:
    """Remembers what ``inner`` accepted for ``ttl`` seconds (never past the token's own
    expiry); refusals and errors are never remembered. Tokens are kept as hashes."""

    def __init__(
        self,
        inner: TokenChecker,
        ttl: float = 5.0,
        max_tokens: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._ttl = ttl
        self._max = max_tokens
        self._clock = clock
        self._known: OrderedDict[bytes, tuple[float, Identity]] = OrderedDict()

    async def authenticate(self, access_token: str) -> Identity:
        key = hashlib.sha256(access_token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock()
        known = self._known.get(key)
        if known is not None and now < known[0]:
            return known[1]
        identity, expires_in = await self._inner.check(access_token)
        self._known[key] = (now + min(self._ttl, max(0.0, expires_in)), identity)
        self._known.move_to_end(key)
        while len(self._known) > self._max:
            self._known.popitem(last=False)
        return identity
