"""Service-to-service authentication for the gRPC services.

Callers present a shared service token (from a Kubernetes Secret) as
``authorization: Bearer <token>`` metadata; the server compares it in constant
time and answers UNAUTHENTICATED otherwise. The gRPC health service stays open
so probes need no secret. Tokens are rotated by listing several accepted ones.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from .settings import Secret

_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


async def _deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        "missing or invalid service credential (authorization: Bearer <service token>)",
    )


class ServiceTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call whose bearer token is not one of the accepted ones."""

    def __init__(self, accepted: Sequence[Secret]) -> None:
        if not accepted or any(not t.value for t in accepted):
            raise ValueError("at least one non-empty service token is required")
        self._accepted = [t.value.encode() for t in accepted]
        self._deny_handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(
            _deny
        )

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method or ""
        if method.startswith(_OPEN_PREFIXES):
            return await continuation(handler_call_details)
        supplied = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                supplied = value[len("Bearer ") :].encode()
        # Compare against every accepted token so timing reveals nothing.
        ok = False
        for token in self._accepted:
            ok |= hmac.compare_digest(supplied, token)
        if not ok:
            return self._deny_handler
        return await continuation(handler_call_details)


class ServiceTokenClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the service token to every unary call of a channel."""

    def __init__(self, token: Secret) -> None:
        self._header = ("authorization", f"Bearer {token.value}")

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = list(client_call_details.metadata or ())
        metadata.append(self._header)
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=client_call_details.timeout,
            metadata=grpc.aio.Metadata(*metadata),
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


# gRPC's reconnect backoff grows to 120 s by default, and while it waits every call
# fails at once: a User service that was down for a minute (or not up yet when the
# API started, as in a fresh `helm install`) stayed "unavailable" for a minute or two
# after it came back. The services are a Service address away: trying every 2 s at
# most is cheap, and bounds how long an outage outlives its cause.
MAX_RECONNECT_BACKOFF_MS = 2000
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
]


def authenticated_channel(target: str, token: Secret) -> grpc.aio.Channel:
    """An insecure-transport channel that carries the service token on each call and
    reconnects within ``MAX_RECONNECT_BACKOFF_MS`` of its server coming back."""
    return grpc.aio.insecure_channel(
        target, options=_CHANNEL_OPTIONS, interceptors=[ServiceTokenClientInterceptor(token)]
    )
