"""Who is calling a REST API: bearer tokens checked by the User service over gRPC.

Shared by every REST API of the project (products, checkouts).
"""

from __future__ import annotations

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


class UserServiceAuthenticator:
    """Asks the User service (``Authenticate``) on every request: revocation is instant."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float = 3.0) -> None:
        self._stub = user_pb2_grpc.UserServiceStub(channel)
        self._timeout = timeout

    async def authenticate(self, access_token: str) -> Identity:
        try:
            reply = await self._stub.Authenticate(
                user_pb2.AuthenticateRequest(access_token=access_token), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            details = error_details(exc)
            if details.code == grpc.StatusCode.UNAUTHENTICATED:
                raise AuthError(details.reason or "TOKEN_INVALID", details.message) from exc
            raise
        return Identity(user_id=reply.user.id, username=reply.user.username)
