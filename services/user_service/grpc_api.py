"""gRPC transport of the User service (``checkout.user.v1.UserService``).

Other services call it with the shared service token (checked by
:class:`saga_kit.grpc_auth.ServiceTokenInterceptor` before any handler runs) to
turn an end user's access token into a user. Refusals carry a
``google.rpc.ErrorInfo`` (reason, domain ``user.checkout.saga.dev``, metadata) so
callers branch on a stable reason instead of parsing messages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from checkout.user.v1 import user_pb2, user_pb2_grpc
from saga_kit import access_tokens
from saga_kit.access_tokens import public_pem
from saga_kit.grpc_auth import ServiceTokenInterceptor
from saga_kit.grpc_errors import RpcFailure, abort
from saga_kit.settings import Secret

from .domain import Accounts, ErrorKind, User, UserError
from .store import OUTAGES as _OUTAGES

DOMAIN = "user.checkout.saga.dev"
SERVICE_NAME = user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name

log = logging.getLogger(__name__)

_CODES = {
    ErrorKind.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
}


def to_failure(error: UserError) -> RpcFailure:
    return RpcFailure(
        _CODES[error.kind],
        error.message,
        reason=error.reason,
        domain=DOMAIN,
        metadata=error.metadata,
        field_violations=[(error.field, error.message)] if error.field else (),
    )


def _unavailable() -> RpcFailure:
    return RpcFailure(
        grpc.StatusCode.UNAVAILABLE,
        "the user store is unavailable, retry later",
        reason="STORE_UNAVAILABLE",
        domain=DOMAIN,
    )


def user_message(user: User) -> user_pb2.User:
    return user_pb2.User(id=user.id, username=user.username, email=user.email)


class UserServicer(user_pb2_grpc.UserServiceServicer):
    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts
        self._signing_keys = user_pb2.ListSigningKeysResponse(
            keys=[
                user_pb2.SigningKey(
                    kid=kid, algorithm=access_tokens.ALGORITHM, public_key_pem=public_pem(key)
                )
                for kid, key in accounts.public_keys().items()
            ]
        )

    async def ListSigningKeys(
        self,
        request: user_pb2.ListSigningKeysRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> user_pb2.ListSigningKeysResponse:
        return self._signing_keys

    async def Authenticate(
        self,
        request: user_pb2.AuthenticateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> user_pb2.AuthenticateResponse:
        try:
            result = await self._accounts.authenticate(request.access_token)
        except UserError as exc:
            await abort(context, to_failure(exc))
        except _OUTAGES:
            log.exception("Authenticate failed: store or Redis unavailable")
            await abort(context, _unavailable())
        expires_at = Timestamp()
        expires_at.FromDatetime(result.claims.expires_at)
        return user_pb2.AuthenticateResponse(user=user_message(result.user), expires_at=expires_at)

    async def GetUser(
        self,
        request: user_pb2.GetUserRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> user_pb2.GetUserResponse:
        try:
            user = await self._accounts.get_user(request.id)
        except UserError as exc:
            await abort(context, to_failure(exc))
        except _OUTAGES:
            log.exception("GetUser failed: store unavailable")
            await abort(context, _unavailable())
        return user_pb2.GetUserResponse(user=user_message(user))


def build_grpc_server(
    accounts: Accounts, service_tokens: Sequence[Secret]
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """The server with the UserService behind the service-token check, and open health.

    Ports are added by the caller. The health servicer is returned so the caller
    can mark the service SERVING once it listens and NOT_SERVING on shutdown.
    """
    server = grpc.aio.server(interceptors=[ServiceTokenInterceptor(service_tokens)])
    user_pb2_grpc.add_UserServiceServicer_to_server(UserServicer(accounts), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server, health_servicer


async def mark_serving(health_servicer: health.aio.HealthServicer) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    await health_servicer.set("", serving)
    await health_servicer.set(SERVICE_NAME, serving)
