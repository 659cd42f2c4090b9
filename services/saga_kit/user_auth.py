"""Who is calling a REST API: bearer tokens checked by the User service over gRPC.

Shared by every REST API of the project (products, checkouts). A token the User
service accepted is remembered for a few seconds (:class:`RememberingAuthenticator`),
so a client polling its checkout costs one round trip per few seconds, not one per
request; a logout or revocation takes effect within those seconds.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from checkout.user.v1 import user_pb2, user_pb2_grpc
from saga_kit.grpc_errors import error_details


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
