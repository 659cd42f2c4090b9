"""gRPC clients of the User and Product services, and their error classification."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from checkout.product.v1 import product_pb2, product_pb2_grpc
from checkout.user.v1 import user_pb2, user_pb2_grpc
from saga_kit.grpc_errors import ErrorDetails, error_details

from ..saga import Line

# gRPC codes worth retrying: the service is down, overloaded or slow, the call was cut
# off, or our credentials are refused (a token being rotated, a misconfiguration an
# operator must fix): none of them is the buyer's fault, so none may end a checkout.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


class ServiceRefused(Exception):
    """A permanent answer (not found, precondition failed, ...): retrying won't help."""

    def __init__(self, details: ErrorDetails) -> None:
        super().__init__(details.message)
        self.details = details


def classify(error: grpc.aio.AioRpcError) -> Exception:
    """A transient error is re-raised as is (the reconciler retries); others are refusals."""
    if error.code() in TRANSIENT_CODES:
        return error
    return ServiceRefused(error_details(error))


class Users:
    def __init__(self, channel: grpc.aio.Channel, timeout: float = 5.0) -> None:
        self._stub = user_pb2_grpc.UserServiceStub(channel)
        self._timeout = timeout

    async def exists(self, user_id: str) -> bool:
        """Whether the user exists (NOT_FOUND -> False); other failures raise."""
        try:
            await self._stub.GetUser(user_pb2.GetUserRequest(id=user_id), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return False
            raise classify(exc) from exc
        return True


class Products:
    def __init__(self, channel: grpc.aio.Channel, timeout: float = 10.0) -> None:
        self._stub = product_pb2_grpc.ProductServiceStub(channel)
        self._timeout = timeout

    async def open_reservations(self, order_ids: Sequence[str]) -> set[str]:
        """Which of these orders' reservations still hold stock (one call per batch).

        Any error (``grpc.aio.AioRpcError`` as raised, an older service's UNIMPLEMENTED
        included) leaves every one of them unknown: the caller looks again later.
        """
        if not order_ids:
            return set()
        reply = await self._stub.OpenReservations(
            product_pb2.OpenReservationsRequest(transaction_ids=list(order_ids)),
            timeout=self._timeout,
        )
        return set(reply.transaction_ids)

    async def reserve(self, order_id: str, user_id: str, lines: Sequence[Line]) -> list[Line]:
        """Reserve (idempotent per order id); returns the reserved lines with names."""
        try:
            reply = await self._stub.Reserve(
                product_pb2.ReserveRequest(
                    transaction_id=order_id,
                    user_id=user_id,
                    items=[
                        product_pb2.ReserveItem(
                            product_id=x.product_id, unit_price=x.unit_price, quantity=x.quantity
                        )
                        for x in lines
                    ],
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise classify(exc) from exc
        return [
            Line(x.product_id, x.unit_price, x.quantity, x.product_name)
            for x in reply.reservation.lines
        ]
