"""One error shape for every HTTP service: RFC 9457 problem details.

Every refusal and failure of the REST checkout API, the User and Product REST APIs and
the webhook listener is an ``application/problem+json`` document::

    {"type": "https://checkout.saga.dev/problems/OutOfStock", "title": "Conflict",
     "status": 409, "detail": "product p-1 is out of stock", "instance": "/api/v1/checkouts",
     "reason": "OutOfStock"}

``reason`` is the stable, machine-readable code (the same codes as the gRPC contracts and
the saga's failure reasons); ``type`` is derived from it (an identifier, not a page);
``title`` is the HTTP status phrase; ``detail`` is for people and may change. Data a
response carried before stays as an extension member (``errors`` naming each invalid
field, the checkout API's ``checkout``, the Product service's ``fields``).

``install`` puts the handlers on an app (HTTPException, validation errors without the
input echoed, :class:`ProblemError`, the apiserver's ApiError, declared outages, and
anything uncaught as a 500 without internals) and makes its OpenAPI document every
error response as ``application/problem+json``.
"""

from __future__ import annotations

import http
import json
import logging
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from .apiserver import ApiError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://checkout.saga.dev/problems/"
RETRY_AFTER_SECONDS = 1
INVALID_REQUEST = "INVALID_REQUEST"
_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar: the instance is a URI reference


class FieldError(BaseModel):
    """One invalid field: where (``["body", "products", 0, "id"]``), what, and its kind.
    Never the value sent."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document with a stable ``reason`` code."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description=f"{TYPE_BASE}<reason>: identifies the kind of problem")
    title: str = Field(description="The HTTP status phrase")
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="What went wrong, for people")
    instance: str = Field(description="The request's path")
    reason: str = Field(
        pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="Stable machine-readable code"
    )
    errors: list[FieldError] | None = Field(
        default=None, description="For invalid requests: each invalid field"
    )


class ProblemError(HTTPException):
    """Raise to answer with a problem document. An HTTPException, so FastAPI lets it pass
    through its body parsing untouched."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(status, detail, dict(headers) if headers else None)
        self.reason = reason
        self.extensions = extensions


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        # A detail may quote input: a lone surrogate there becomes "?", never a crash.
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", "replace")


def problem(
    status: int,
    reason: str,
    detail: str,
    *,
    instance: str,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + reason,
        "title": _title(status),
        "status": status,
        "detail": detail,
        "instance": urllib.parse.quote(instance, safe=_PATH_SAFE, errors="replace"),
        "reason": reason,
        **extensions,
    }
    return ProblemResponse(body, status_code=status, headers=dict(headers) if headers else None)


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors without ``input`` and ``ctx`` (a password or NaN would be echoed)."""
    return [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "value_error")),
        }
        for e in errors
    ]


def invalid(
    errors: list[dict[str, Any]], *, instance: str, reason: str = INVALID_REQUEST
) -> ProblemResponse:
    where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
    return problem(422, reason, f"invalid request: {where}", instance=instance, errors=errors)


def responses(
    described: Mapping[int, str], model: type[Problem] = Problem
) -> dict[int | str, dict[str, Any]]:
    """A route's error responses for ``responses=``, each a problem document; 500 always."""
    out: dict[int | str, dict[str, Any]] = {
        code: {"model": model, "description": text} for code, text in described.items()
    }
    out.setdefault(500, {"model": Problem, "description": "INTERNAL_ERROR: a bug, logged"})
    return out


def install(app: FastAPI, outages: Mapping[type[Exception], str] | None = None) -> None:
    """Answer every error of ``app`` with a problem document. ``outages`` maps exception
    types of unreachable infrastructure to the 503 reason they are answered with (the
    client retries after Retry-After)."""

    async def problem_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, ProblemError)
        return problem(
            exc.status_code,
            exc.reason,
            str(exc.detail),
            instance=request.url.path,
            headers=exc.headers,
            **exc.extensions,
        )

    async def http_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, HTTPException)
        detail = exc.detail
        reason = http.HTTPStatus(exc.status_code).name
        extensions: dict[str, Any] = {}
        if isinstance(detail, dict):  # {"reason", "message", ...}
            extensions = {k: v for k, v in detail.items() if k not in ("reason", "message")}
            reason, detail = str(detail.get("reason", reason)), detail.get("message", "")
        return problem(
            exc.status_code,
            reason,
            str(detail),
            instance=request.url.path,
            headers=exc.headers,
            **extensions,
        )

    async def validation_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, RequestValidationError)
        return invalid(field_errors(exc.errors()), instance=request.url.path)

    async def apiserver_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, ApiError)
        if exc.status in (0, 429) or exc.status >= 500:
            return _unavailable(request, "APISERVER_UNAVAILABLE")
        # Any other refusal means a request we should not have sent: a bug, not a retry.
        log.error("%s %s: the apiserver refused: %s", request.method, request.url.path, exc.status)
        return _internal(request)

    def outage(reason: str) -> Callable[[Request, Exception], Any]:
        async def handler(request: Request, exc: Exception) -> ProblemResponse:
            log.error("%s %s: %s: %r", request.method, request.url.path, reason, exc)
            return _unavailable(request, reason)

        return handler

    async def unexpected(request: Request, exc: Exception) -> ProblemResponse:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _internal(request)

    app.add_exception_handler(ProblemError, problem_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ApiError, apiserver_error)
    for kind, reason in (outages or {}).items():
        app.add_exception_handler(kind, outage(reason))
    app.add_exception_handler(Exception, unexpected)
    _document_problems(app)


def _unavailable(request: Request, reason: str) -> ProblemResponse:
    return problem(
        503,
        reason,
        "a service this request needs is unavailable; retry",
        instance=request.url.path,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _internal(request: Request) -> ProblemResponse:
    return problem(
        500,
        "INTERNAL_ERROR",
        "an unexpected error occurred; it was logged",
        instance=request.url.path,
    )


def _title(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _document_problems(app: FastAPI) -> None:
    """Error responses in the OpenAPI as ``application/problem+json`` (FastAPI writes
    ``application/json``), and FastAPI's own 422 schema replaced by the problem."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        problem_ref = {"$ref": "#/components/schemas/Problem"}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for code, answer in operation.get("responses", {}).items():
                    if code[0] not in "45":
                        continue
                    content = answer.get("content", {})
                    body = content.pop("application/json", None) or {"schema": problem_ref}
                    if "HTTPValidationError" in json.dumps(body):
                        body = {"schema": problem_ref}
                    answer["content"] = {PROBLEM_JSON: body}
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        if "Problem" not in components:  # every route declared its own errors
            components["Problem"] = _problem_schema(components)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problem_schema(components: dict[str, Any]) -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    return schema
