"""gRPC errors a caller can act on: a status code plus google.rpc details.

Servers abort with a ``google.rpc.Status`` carrying an ``ErrorInfo`` (a stable
machine-readable reason and metadata such as the product id) and, for bad input,
a ``BadRequest`` listing the offending fields. Clients read them back with
:func:`error_details`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class ErrorDetails:
    """What a client learns from a failed call."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: dict[str, str] = field(default_factory=dict)


class RpcFailure(Exception):
    """Raised by domain code; the transport turns it into a rich gRPC status."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)

    def status_details(self) -> bytes:
        details: list[any_pb2.Any] = []
        if self.reason:
            packed = any_pb2.Any()
            packed.Pack(
                error_details_pb2.ErrorInfo(
                    reason=self.reason, domain=self.domain, metadata=self.metadata
                )
            )
            details.append(packed)
        if self.field_violations:
            packed = any_pb2.Any()
            packed.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in self.field_violations
                    ]
                )
            )
            details.append(packed)
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        return bytes(status.SerializeToString())


async def abort(context: grpc.aio.ServicerContext[Any, Any], failure: RpcFailure) -> NoReturn:
    await context.abort(
        failure.code, failure.message, trailing_metadata=((_DETAILS_KEY, failure.status_details()),)
    )
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def error_details(error: grpc.aio.AioRpcError) -> ErrorDetails:
    """The status code, message and google.rpc details of a failed call."""
    result = ErrorDetails(code=error.code(), message=error.details() or "")
    for key, value in error.trailing_metadata() or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        reason, domain, metadata, violations = "", "", {}, {}
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(info):
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Unpack(bad):
                violations = {v.field: v.description for v in bad.field_violations}
        result = ErrorDetails(
            code=result.code,
            message=status.message or result.message,
            reason=reason,
            domain=domain,
            metadata=metadata,
            field_violations=violations,
        )
    return result
