"""gRPC transport of the Product service (checkout.product.v1.ProductService)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from checkout.product.v1 import product_pb2, product_pb2_grpc
from saga_kit.grpc_errors import RpcFailure, abort

from . import store
from .domain import (
    ErrorKind,
    ProductError,
    ReservationStatus,
    ReserveItem,
    not_found,
    validate_asked_ids,
    validate_reserve_request,
)

DOMAIN = "product.checkout.saga.dev"
MAX_PAGE_SIZE = 100

_CODES = {
    ErrorKind.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
}

_STATUS = {
    ReservationStatus.RESERVED: product_pb2.RESERVATION_STATUS_RESERVED,
    ReservationStatus.COMMITTED: product_pb2.RESERVATION_STATUS_COMMITTED,
    ReservationStatus.SETTLED: product_pb2.RESERVATION_STATUS_SETTLED,
    ReservationStatus.CANCELLED: product_pb2.RESERVATION_STATUS_CANCELLED,
    ReservationStatus.EXPIRED: product_pb2.RESERVATION_STATUS_EXPIRED,
}


def to_failure(error: ProductError) -> RpcFailure:
    return RpcFailure(
        _CODES[error.kind],
        error.message,
        reason=error.reason,
        domain=DOMAIN,
        metadata=error.metadata,
        field_violations=error.field_violations,
    )


def _ts(value: Any) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def product_message(p: store.Product) -> product_pb2.Product:
    return product_pb2.Product(
        id=p.id,
        owner_id=p.owner_id,
        name=p.name,
        slug=p.slug,
        description=p.description,
        price=p.price,
        stock=p.stock,
        reserved=p.reserved,
        available=p.available,
        created_at=_ts(p.created_at),
        updated_at=_ts(p.updated_at),
    )


def reservation_message(r: store.Reservation) -> product_pb2.Reservation:
    return product_pb2.Reservation(
        transaction_id=r.transaction_id,
        user_id=r.user_id,
        status=_STATUS[r.status],
        lines=[
            product_pb2.ReservedLine(
                product_id=line.product_id,
                product_name=line.product_name,
                unit_price=line.unit_price,
                quantity=line.quantity,
            )
            for line in r.lines
        ],
        subtotal=r.subtotal,
        created_at=_ts(r.created_at),
        updated_at=_ts(r.updated_at),
    )


class ProductServicer(product_pb2_grpc.ProductServiceServicer):
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def Reserve(
        self,
        request: product_pb2.ReserveRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> product_pb2.ReserveResponse:
        items = [ReserveItem(i.product_id, i.unit_price, i.quantity) for i in request.items]
        try:
            validate_reserve_request(request.transaction_id, request.user_id, items)
            reservation, replayed = await store.reserve(
                self._pool, request.transaction_id, request.user_id, items
            )
        except ProductError as exc:
            await abort(context, to_failure(exc))
        return product_pb2.ReserveResponse(
            reservation=reservation_message(reservation), replayed=replayed
        )

    async def GetReservation(
        self,
        request: product_pb2.GetReservationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> product_pb2.Reservation:
        reservation = await store.get_reservation(self._pool, request.transaction_id)
        if reservation is None:
            await abort(
                context,
                RpcFailure(
                    grpc.StatusCode.NOT_FOUND,
                    f"no reservation for transaction {request.transaction_id}",
                    reason="RESERVATION_NOT_FOUND",
                    domain=DOMAIN,
                    metadata={"transaction_id": request.transaction_id},
                ),
            )
        return reservation_message(reservation)

    async def OpenReservations(
        self,
        request: product_pb2.OpenReservationsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> product_pb2.OpenReservationsResponse:
        asked = list(request.transaction_ids)
        try:
            validate_asked_ids(asked)
        except ProductError as exc:
            await abort(context, to_failure(exc))
        open_ids = await store.open_reservations(self._pool, asked) if asked else []
        return product_pb2.OpenReservationsResponse(transaction_ids=open_ids)

    async def GetProduct(
        self,
        request: product_pb2.GetProductRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> product_pb2.Product:
        product = await store.get_product(self._pool, request.id) if request.id else None
        if product is None:
            await abort(context, to_failure(not_found(request.id)))
        return product_message(product)

    async def ListProducts(
        self,
        request: product_pb2.ListProductsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> product_pb2.ListProductsResponse:
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            await abort(
                context,
                RpcFailure(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"page_size must be 0 to {MAX_PAGE_SIZE}",
                    reason="INVALID_PAGE_SIZE",
                    domain=DOMAIN,
                    field_violations=[("page_size", f"0 to {MAX_PAGE_SIZE}")],
                ),
            )
        try:
            products, next_token = await store.list_products(
                self._pool,
                request.owner_id or None,
                request.page_size or 20,
                request.page_token or None,
            )
        except ProductError as exc:
            await abort(context, to_failure(exc))
        return product_pb2.ListProductsResponse(
            products=[product_message(p) for p in products], next_page_token=next_token or ""
        )
