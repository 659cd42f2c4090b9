"""REST transport of the Product service: owner CRUD and the public catalogue.

No ``from __future__ import annotations`` here: FastAPI resolves the dependency
aliases defined inside ``create_rest_app`` from the real annotations.
"""

import asyncio
import datetime as dt
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

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
MAX_MONEY = 10**12
DB_PROBE_TIMEOUT = 2.0
SLUG_PATTERN = SLUG_RE.pattern


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    slug: str | None = Field(default=None, max_length=100, pattern=SLUG_PATTERN)
    description: str = Field(default="", max_length=5000)
    price: int = Field(ge=0, le=MAX_MONEY, description="Integer minor units (IDR)")
    stock: int = Field(ge=0, le=10**9)


class ProductPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    slug: str | None = Field(default=None, max_length=100, pattern=SLUG_PATTERN)
    description: str | None = Field(default=None, max_length=5000)
    price: int | None = Field(default=None, ge=0, le=MAX_MONEY)
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
    async def product_error(_: Request, exc: ProductError) -> JSONResponse:
        detail: dict[str, Any] = {"reason": exc.reason, "message": exc.message, **exc.metadata}
        if exc.field_violations:
            detail["fields"] = dict(exc.field_violations)
        return JSONResponse(status_code=_HTTP[exc.kind], content={"detail": detail})

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
            raise HTTPException(503, "the user service is unavailable; retry") from exc

    Owner = Annotated[Identity, Depends(current_user)]
    api = APIRouter(prefix="/api/v1")

    @api.get("/products", response_model=CatalogPage)
    async def catalog(
        page_size: Annotated[int, Query(ge=1, le=100)] = 20,
        page_token: str | None = None,
    ) -> CatalogPage:
        products, token = await store.list_products(pool, None, page_size, page_token)
        return CatalogPage(items=[_catalog(p) for p in products], next_page_token=token)

    @api.get("/products/{product_id}", response_model=CatalogProduct)
    async def product(product_id: str) -> CatalogProduct:
        found = await store.get_product(pool, product_id)
        if found is None:
            raise not_found(product_id)
        return _catalog(found)

    @api.get("/owner/products", response_model=OwnerPage)
    async def my_products(
        user: Owner,
        page_size: Annotated[int, Query(ge=1, le=100)] = 20,
        page_token: str | None = None,
    ) -> OwnerPage:
        products, token = await store.list_products(pool, user.user_id, page_size, page_token)
        return OwnerPage(items=[_owner(p) for p in products], next_page_token=token)

    @api.post("/products", status_code=201, response_model=OwnerProduct)
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

    @api.patch("/products/{product_id}", response_model=OwnerProduct)
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
        return _owner(await store.update_product(pool, product_id, user.user_id, changes))

    @api.delete("/products/{product_id}", status_code=204)
    async def delete(product_id: str, user: Owner) -> Response:
        await store.delete_product(pool, product_id, user.user_id)
        return Response(status_code=204)

    app.include_router(api)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready: Postgres answers and every background task (the event consumer)
        runs and makes progress; else 503 naming what is not."""
        problems = readiness.problems() if readiness is not None else {}
        try:
            await asyncio.wait_for(pool.fetchval("SELECT 1"), DB_PROBE_TIMEOUT)
        except Exception as exc:  # any failure of the probe query means not ready
            problems["database"] = repr(exc)
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    return app


def _unauthorized(reason: str, message: str) -> HTTPException:
    return HTTPException(
        401,
        detail={"reason": reason, "message": message},
        headers={"WWW-Authenticate": "Bearer"},
    )
