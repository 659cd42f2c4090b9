"""REST transport of the Product service: owner CRUD and the public catalogue.

No ``from __future__ import annotations`` here: FastAPI resolves the dependency
aliases defined inside ``create_rest_app`` from the real annotations.
"""

import asyncio
import datetime as dt
from typing import Annotated, Any

import asyncpg
import grpc
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from saga_kit import checkout_bounds as bounds
from saga_kit import problems
from saga_kit.problems import ProblemError, ProblemResponse, problem
from saga_kit.request_bodies import BodyLimit, StrictJsonRoute
from saga_kit.supervise import Readiness
from saga_kit.user_auth import Authenticator, AuthError, Identity

from . import store
from .domain import SLUG_RE, ErrorKind, ProductError, not_found, slugify

_HTTP = {
    ErrorKind.INVALID: 422,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.PRECONDITION: 409,
    ErrorKind.CONFLICT: 409,
    ErrorKind.FORBIDDEN: 403,
}
MAX_MONEY = bounds.MAX_UNIT_PRICE
# A product priced 0 is refused: Midtrans opens no payment page for nothing, so a
# checkout of it could never be paid (docs/services.md).
MIN_PRICE = bounds.MIN_UNIT_PRICE
DB_PROBE_TIMEOUT = 2.0
SLUG_PATTERN = SLUG_RE.pattern
RETRY = {"Retry-After": str(problems.RETRY_AFTER_SECONDS)}
AUTH = {
    401: "MISSING_TOKEN, TOKEN_INVALID, TOKEN_EXPIRED or TOKEN_REVOKED",
    503: "USER_SERVICE_UNAVAILABLE or STORE_UNAVAILABLE: retry after Retry-After",
}
BODY = {
    400: "MALFORMED: the body is not JSON",
    413: "BODY_TOO_LARGE",
    422: "INVALID_REQUEST (errors names each field) or NULL_FIELD (fields names them)",
}
PAGE = {422: "INVALID_PAGE_TOKEN or INVALID_REQUEST"}
OWNED = {
    403: "NOT_PRODUCT_OWNER",
    404: "PRODUCT_NOT_FOUND",
    409: "SLUG_TAKEN or STOCK_BELOW_RESERVED (reserved names what is held)",
}
STORE = {503: "STORE_UNAVAILABLE: Postgres does not answer; retry"}


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    slug: str | None = Field(default=None, max_length=100, pattern=SLUG_PATTERN)
    description: str = Field(default="", max_length=5000)
    price: int = Field(ge=MIN_PRICE, le=MAX_MONEY, description="Integer minor units (IDR), > 0")
    stock: int = Field(ge=0, le=10**9)


class ProductPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    slug: str | None = Field(default=None, max_length=100, pattern=SLUG_PATTERN)
    description: str | None = Field(default=None, max_length=5000)
    price: int | None = Field(default=None, ge=MIN_PRICE, le=MAX_MONEY)
    stock: int | None = Field(default=None, ge=0, le=10**9)


class CatalogProduct(BaseModel):
    id: str
    name: str
    slug: str
    description: str
    price: int
    available: int


class OwnerProduct(CatalogProduct):
    owner_id: str
    stock: int
    reserved: int
    created_at: dt.datetime
    updated_at: dt.datetime


class CatalogPage(BaseModel):
    items: list[CatalogProduct]
    next_page_token: str | None


class OwnerPage(BaseModel):
    items: list[OwnerProduct]
    next_page_token: str | None


def _catalog(p: store.Product) -> CatalogProduct:
    return CatalogProduct(
        id=p.id,
        name=p.name,
        slug=p.slug,
        description=p.description,
        price=p.price,
        available=p.available,
    )


def _owner(p: store.Product) -> OwnerProduct:
    return OwnerProduct(
        **_catalog(p).model_dump(),
        owner_id=p.owner_id,
        stock=p.stock,
        reserved=p.reserved,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


def create_rest_app(
    pool: Any, authenticator: Authenticator, readiness: Readiness | None = None
) -> FastAPI:
    app = FastAPI(
        title="Product service",
        version="1",
        description="Products (owner CRUD) and the public catalogue. Money: integer IDR.",
    )

    @app.exception_handler(ProductError)
    async def product_error(request: Request, exc: ProductError) -> ProblemResponse:
        extensions: dict[str, Any] = dict(exc.metadata)
        if exc.field_violations:
            extensions["fields"] = dict(exc.field_violations)
        return problem(
            _HTTP[exc.kind], exc.reason, exc.message, instance=request.url.path, **extensions
        )

    async def current_user(
        authorization: Annotated[str | None, Header()] = None,
    ) -> Identity:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("MISSING_TOKEN", "Authorization: Bearer <access token> required")
        try:
            return await authenticator.authenticate(token.strip())
        except AuthError as exc:
            raise _unauthorized(exc.reason, str(exc)) from exc
        except grpc.aio.AioRpcError as exc:
            raise ProblemError(
                503,
                "USER_SERVICE_UNAVAILABLE",
                "the user service is unavailable; retry",
                headers=RETRY,
            ) from exc

    Owner = Annotated[Identity, Depends(current_user)]
    api = APIRouter(prefix="/api/v1", route_class=StrictJsonRoute)

    def known(product_id: str) -> str:
        """An id that could exist (the store is not asked about U+0000 or 10,000 characters)."""
        if not bounds.possible_id(product_id):
            raise ProblemError(404, "PRODUCT_NOT_FOUND", "no product has this id")
        return product_id

    @api.get(
        "/products",
        response_model=CatalogPage,
        tags=["catalogue"],
        responses=problems.responses({**PAGE, **STORE}),
    )
    async def catalog(
        page_size: Annotated[int, Query(ge=1, le=100)] = 20,
        page_token: str | None = None,
    ) -> CatalogPage:
        products, token = await store.list_products(pool, None, page_size, page_token)
        return CatalogPage(items=[_catalog(p) for p in products], next_page_token=token)

    @api.get(
        "/products/{product_id}",
        response_model=CatalogProduct,
        tags=["catalogue"],
        responses=problems.responses({404: "PRODUCT_NOT_FOUND", **STORE}),
    )
    async def product(product_id: str) -> CatalogProduct:
        found = await store.get_product(pool, known(product_id))
        if found is None:
            raise not_found(product_id)
        return _catalog(found)

    @api.get(
        "/owner/products",
        response_model=OwnerPage,
        tags=["owner"],
        responses=problems.responses({**PAGE, **AUTH}),
    )
    async def my_products(
        user: Owner,
        page_size: Annotated[int, Query(ge=1, le=100)] = 20,
        page_token: str | None = None,
    ) -> OwnerPage:
        products, token = await store.list_products(pool, user.user_id, page_size, page_token)
        return OwnerPage(items=[_owner(p) for p in products], next_page_token=token)

    @api.post(
        "/products",
        status_code=201,
        response_model=OwnerProduct,
        tags=["owner"],
        responses=problems.responses({409: "SLUG_TAKEN", **BODY, **AUTH}),
    )
    async def create(body: ProductIn, user: Owner) -> OwnerProduct:
        created = await store.create_product(
            pool,
            owner_id=user.user_id,
            name=body.name,
            slug=body.slug or slugify(body.name),
            description=body.description,
            price=body.price,
            stock=body.stock,
        )
        return _owner(created)

    @api.patch(
        "/products/{product_id}",
        response_model=OwnerProduct,
        tags=["owner"],
        responses=problems.responses({**OWNED, **BODY, **AUTH}),
    )
    async def update(product_id: str, body: ProductPatch, user: Owner) -> OwnerProduct:
        changes = body.model_dump(exclude_unset=True)
        nulls = [name for name, value in changes.items() if value is None]
        if nulls:
            raise ProductError(
                ErrorKind.INVALID,
                "NULL_FIELD",
                f"fields cannot be null: {', '.join(nulls)}",
                field_violations=[(n, "cannot be null") for n in nulls],
            )
        return _owner(await store.update_product(pool, known(product_id), user.user_id, changes))

    @api.delete(
        "/products/{product_id}",
        status_code=204,
        tags=["owner"],
        responses=problems.responses({**OWNED, **AUTH}),
    )
    async def delete(product_id: str, user: Owner) -> Response:
        await store.delete_product(pool, known(product_id), user.user_id)
        return Response(status_code=204)

    app.include_router(api)

    @app.get("/healthz", tags=["probes"], responses=problems.responses({}))
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["probes"],
        responses=problems.responses({503: "NOT_READY: the problems member says what is not"}),
    )
    async def readyz() -> JSONResponse:
        """Ready: Postgres answers and every background task (the event consumer)
        runs and makes progress; else 503 naming what is not."""
        failing = readiness.problems() if readiness is not None else {}
        try:
            await asyncio.wait_for(pool.fetchval("SELECT 1"), DB_PROBE_TIMEOUT)
        except Exception as exc:  # any failure of the probe query means not ready
            failing["database"] = repr(exc)
        if failing:
            raise ProblemError(
                503, "NOT_READY", f"not ready: {', '.join(failing)}", problems=failing
            )
        return JSONResponse({"status": "ready"})

    problems.install(
        app,
        outages={
            asyncpg.PostgresConnectionError: "STORE_UNAVAILABLE",
            asyncpg.InterfaceError: "STORE_UNAVAILABLE",
            OSError: "STORE_UNAVAILABLE",
        },
    )
    app.add_middleware(BodyLimit)
    return app


def _unauthorized(reason: str, message: str) -> ProblemError:
    return ProblemError(401, reason, message, headers={"WWW-Authenticate": "Bearer"})
