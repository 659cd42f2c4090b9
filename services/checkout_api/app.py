"""Routes of the checkout API (``/api/v1``); OpenAPI at ``/docs``."""

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import aiohttp
import asyncpg
import grpc
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from checkout.product.v1 import product_pb2, product_pb2_grpc
from saga_kit import checkout_bounds as bounds
from saga_kit import problems
from saga_kit.apiserver import ApiError
from saga_kit.checkout_resource import API_VERSION, KIND, TERMINAL
from saga_kit.pagination import InvalidPageToken
from saga_kit.problems import Problem, ProblemError, ProblemResponse, problem
from saga_kit.request_bodies import BodyLimit, StrictJsonRoute
from saga_kit.signing_keys import PublishedKeys
from saga_kit.user_auth import Authenticator, AuthError, Identity

from . import store
from .admission import Admission
from .kube import AlreadyExists, Checkouts, Invalid
from .limits import Refused, payment_ttl
from .quota import Quota
from .soldout import Claim, SoldOutGate, Wanted
from .watch import CheckoutWatch

READY = TERMINAL | {"AwaitingPayment"}
REQUEST_HASH = "checkout.saga.dev/request-hash"
USER_LABEL = "checkout.saga.dev/user"
KEY_PATTERN = r"^[A-Za-z0-9_\-.:]{1,128}$"

# Rejected reasons -> HTTP status (the reason and message go in the body).
REJECTED_STATUS = {
    "OutOfStock": 409,
    "InsufficientStock": 409,
    "PriceMismatch": 409,
    "DuplicateOrderId": 409,
    "ProductNotFound": 422,
    "InvalidVoucher": 422,
    "InvalidRequest": 422,
    "Unauthorized": 403,
}


def _plain_text(value: str) -> str:
    """No control characters (NUL included) and no lone surrogates: such a string can't
    be a product id, a voucher or a name, and breaks Kubernetes, Postgres and JSON."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError("must not contain control characters or lone surrogates")
    return value


Text = Annotated[str, AfterValidator(_plain_text)]


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(
        min_length=1,
        max_length=bounds.PRODUCT_ID_MAX_LENGTH,
        pattern=bounds.ID_PATTERN,
        description="Product id",
    )
    price: int = Field(
        ge=bounds.MIN_UNIT_PRICE,
        le=bounds.MAX_UNIT_PRICE,
        description="Unit price seen by the buyer, in IDR",
    )
    quantity: int = Field(ge=1, le=bounds.MAX_QUANTITY)


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first_name: Text | None = Field(default=None, max_length=255)
    last_name: Text | None = Field(default=None, max_length=255)
    email: Text | None = Field(default=None, max_length=255)
    phone: Text | None = Field(default=None, max_length=32)


class CheckoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    products: list[Item] = Field(min_length=1, max_length=bounds.MAX_ITEMS)
    voucher: Text | None = Field(default=None, min_length=1, max_length=64)
    customer: Customer | None = None
    payment_ttl_seconds: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="How long the buyer has to pay; at most the configured cap"
        " (CHECKOUT_MAX_PAYMENT_TTL_SECONDS, default 3600): above it, 422 PaymentTTLTooLong",
    )

    @field_validator("products")
    @classmethod
    def each_product_once(cls, products: list[Item]) -> list[Item]:
        seen: set[str] = set()
        for item in products:
            if item.id in seen:
                raise ValueError(f"product {item.id} is listed twice; send it once")
            seen.add(item.id)
        return products


class LineOut(BaseModel):
    product_id: str
    unit_price: int
    quantity: int


class CheckoutOut(BaseModel):
    id: str
    phase: str
    total: int | None = None
    currency: str = "IDR"
    snap_token: str | None = None
    redirect_url: str | None = None
    expires_at: dt.datetime | None = None
    failure_reason: str | None = None
    failure_message: str | None = None
    items: list[LineOut] = []
    created_at: dt.datetime | None = None
    status_url: str


class CheckoutPage(BaseModel):
    items: list[CheckoutOut]
    next_page_token: str | None


class SaleOut(BaseModel):
    """A checkout as the seller of one of its products sees it: its phase and total and
    the seller's own line, never the buyer's payment link or other sellers' lines."""

    id: str
    phase: str
    total: int | None = None
    currency: str = "IDR"
    items: list[LineOut] = []
    created_at: dt.datetime | None = None


class SalePage(BaseModel):
    items: list[SaleOut]
    next_page_token: str | None


class CheckoutProblem(Problem):
    """A checkout the saga refused: the problem, and the checkout as it ended (null when
    refused before one was created)."""

    checkout: CheckoutOut | None = None


AUTH = {401: "TOKEN_MISSING or TOKEN_INVALID (and WWW-Authenticate: Bearer)"}
USER_SERVICE = {503: "USER_SERVICE_UNAVAILABLE or APISERVER_UNAVAILABLE: retry after Retry-After"}
NOT_FOUND = {404: "CHECKOUT_NOT_FOUND: no such checkout of the caller's"}
PAGE = {422: "INVALID_PAGE_TOKEN or INVALID_REQUEST (errors names each field)"}
CREATE_ERRORS = problems.responses(
    {
        **AUTH,
        403: "Unauthorized: the user is unknown to the User service",
        409: "OutOfStock, InsufficientStock, PriceMismatch or DuplicateOrderId (the checkout"
        " member holds the refused checkout, or null when none was created)",
        400: "MALFORMED: the body is not JSON (NaN, nested too deep, not UTF-8)",
        413: "BODY_TOO_LARGE",
        422: "INVALID_REQUEST (errors names each field), ProductNotFound, InvalidVoucher,"
        " PaymentTTLTooLong, IDEMPOTENCY_KEY_REUSED or INVALID_CHECKOUT",
        429: "RateLimited or TooManyOpenCheckouts (see Retry-After)",
        502: "PaymentSetupFailed: Midtrans opened no payment page (checkout member)",
        503: "Overloaded (too many POSTs at once), LimiterUnavailable (Redis down), Busy,"
        " USER_SERVICE_UNAVAILABLE or APISERVER_UNAVAILABLE: retry after Retry-After",
    },
    model=CheckoutProblem,
)


def _payment_link(phase: str | None, token: str | None, url: str | None) -> dict[str, str | None]:
    """Only a checkout still waiting for its money hands out the payment link."""
    paying = phase == "AwaitingPayment"
    return {"snap_token": token if paying else None, "redirect_url": url if paying else None}


def _from_resource(body: dict[str, Any]) -> CheckoutOut:
    status = body.get("status") or {}
    payment = status.get("payment") or {}
    failure = status.get("failure") or {}
    name = body["metadata"]["name"]
    return CheckoutOut(
        id=name,
        phase=status.get("phase") or "Pending",
        total=(status.get("amounts") or {}).get("total"),
        currency=body["spec"].get("currency", "IDR"),
        **_payment_link(status.get("phase"), payment.get("snapToken"), payment.get("redirectUrl")),
        expires_at=status.get("expiresAt"),
        failure_reason=failure.get("reason"),
        failure_message=failure.get("message"),
        items=[
            LineOut(product_id=i["productId"], unit_price=i["unitPrice"], quantity=i["quantity"])
            for i in body["spec"]["items"]
        ],
        created_at=body["metadata"].get("creationTimestamp"),
        status_url=f"/api/v1/checkouts/{name}",
    )


def _lines(row: dict[str, Any], product_id: str | None = None) -> list[LineOut]:
    """The record's lines (only this product's, if given)."""
    return [
        LineOut(product_id=i["product_id"], unit_price=i["unit_price"], quantity=i["quantity"])
        for i in row["items"]
        if product_id is None or i["product_id"] == product_id
    ]


def _from_record(row: dict[str, Any]) -> CheckoutOut:
    return CheckoutOut(
        id=row["order_id"],
        phase=row["phase"],
        total=row["total"],
        currency=row["currency"],
        **_payment_link(row["phase"], row["snap_token"], row["redirect_url"]),
        expires_at=row["expires_at"],
        failure_reason=row["failure_reason"],
        failure_message=row["failure_message"],
        items=_lines(row),
        created_at=row["created_at"],
        status_url=f"/api/v1/checkouts/{row['order_id']}",
    )


def _sale(row: dict[str, Any], product_id: str) -> SaleOut:
    """What the seller of ``product_id`` sees of a checkout."""
    return SaleOut(
        id=row["order_id"],
        phase=row["phase"],
        total=row["total"],
        currency=row["currency"],
        items=_lines(row, product_id),
        created_at=row["created_at"],
    )


def request_hash(user_id: str, body: CheckoutRequest) -> str:
    canonical = json.dumps({"user": user_id, **body.model_dump()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def checkout_name(user_id: str, idempotency_key: str | None) -> str:
    """Deterministic for (user, Idempotency-Key): a retried POST names the same Checkout."""
    if idempotency_key is None:
        return f"co-{uuid.uuid4().hex[:24]}"
    digest = hashlib.sha256(f"{user_id}\0{idempotency_key}".encode()).hexdigest()
    return f"co-{digest[:24]}"


@dataclass
class ApiDeps:
    checkouts: Checkouts
    readmodel: Any  # asyncpg pool on the read model schema
    authenticator: Authenticator
    products: "product_pb2_grpc.ProductServiceAsyncStub"  # the type exists in the stubs only
    wait_seconds: float
    quota: Quota  # payment TTL cap, open checkouts per user, POST rate
    watch: CheckoutWatch  # wakes waiting POSTs (run it: CheckoutWatch.run)
    soldout: SoldOutGate  # refuses at once what could not be reserved
    admission: Admission  # POSTs in flight at most; the rest 503 at once
    token_keys: PublishedKeys | None = None  # not ready until it holds the User service's


def create_app(deps: ApiDeps) -> FastAPI:
    app = FastAPI(
        title="Checkout API",
        version="1",
        description="Check out a cart as a saga: reserve stock, open a Midtrans payment page, "
        "settle or expire. Money is integer IDR.",
    )

    async def current_user(authorization: Annotated[str | None, Header()] = None) -> Identity:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("TOKEN_MISSING", "Authorization: Bearer <access token> required")
        try:
            return await deps.authenticator.authenticate(token.strip())
        except AuthError as exc:
            raise _unauthorized(exc.reason, str(exc)) from exc
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(
                "USER_SERVICE_UNAVAILABLE", "the user service is unavailable"
            ) from exc

    User = Annotated[Identity, Depends(current_user)]
    api = APIRouter(prefix="/api/v1", route_class=StrictJsonRoute)

    async def own(user: Identity, checkout_id: str) -> tuple[dict[str, Any] | None, CheckoutOut]:
        if not bounds.possible_name(checkout_id):  # ".", "..", 10,000 characters
            raise _not_found(checkout_id)
        body = await deps.checkouts.get(checkout_id)
        if body is not None and body["spec"].get("userId") == user.user_id:
            return body, _from_resource(body)
        row = await store.get(deps.readmodel, checkout_id)
        if row is not None and row["user_id"] == user.user_id:
            return None, _from_record(row)
        # Someone else's checkout looks exactly like a missing one.
        raise _not_found(checkout_id)

    async def archived_original(
        name: str, user: Identity, row: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The journal's record of this checkout (``row``) if its resource is gone."""
        if row is None or row["user_id"] != user.user_id:
            return None
        if await deps.checkouts.get(name) is not None:
            return None  # still there: the create below answers from it
        return row

    async def exists(name: str, user: Identity, row: dict[str, Any] | None) -> bool:
        """Whether a checkout of this name was made (``row``: its journal record). One
        not registered yet is among the names the quota keeps (made before creating)."""
        return row is not None or await deps.quota.created_lately(user.user_id, name)

    @api.post(
        "/checkouts",
        status_code=201,
        response_model=CheckoutOut,
        tags=["checkouts"],
        responses={
            200: {"model": CheckoutOut, "description": "A retried POST (Idempotent-Replayed)"},
            202: {"model": CheckoutOut, "description": "Still in progress: poll status_url"},
            **CREATE_ERRORS,
        },
    )
    async def create(
        body: CheckoutRequest,
        user: User,
        response: Response,
        idempotency_key: Annotated[str | None, Header(pattern=KEY_PATTERN)] = None,
    ) -> Any:
        ttl = payment_ttl(body.payment_ttl_seconds, deps.quota.limits)
        wanted = [Wanted(i.id, i.quantity) for i in body.products]
        # The gate first: in a rush it holds buyers back (without an admission place)
        # while this API's checkouts in flight claim what is left of a product.
        async with deps.soldout.claim(wanted, deps.wait_seconds) as claim:
            try:
                if claim.refusal is not None:  # answered without a checkout: no place needed
                    return await open_checkout(body, user, response, idempotency_key, ttl, claim)
                with deps.admission.admit():  # overload is refused now, not queued
                    return await open_checkout(body, user, response, idempotency_key, ttl, claim)
            except Refused:
                claim.unused()
                raise

    async def open_checkout(
        body: CheckoutRequest,
        user: Identity,
        response: Response,
        idempotency_key: str | None,
        ttl: int,
        claim: Claim,
    ) -> Any:
        await deps.quota.throttle(user.user_id)
        name = checkout_name(user.user_id, idempotency_key)
        # A retried POST's checkout, as the journal knows it (looked up once).
        row = await store.get(deps.readmodel, name) if idempotency_key else None
        if idempotency_key and (archived := await archived_original(name, user, row)) is not None:
            # Its Checkout was deleted after it ended (TTL): creating it again would be a
            # second saga under the same order id. The original is the answer.
            if not _same_lines(archived, body):
                raise _key_reused()
            response.status_code = 200
            response.headers["Idempotent-Replayed"] = "true"
            return _from_record(archived)
        refusal = claim.refusal
        if refusal is not None and not (idempotency_key and await exists(name, user, row)):
            # Nothing is created: the saga could only have rejected it (a retried POST
            # whose checkout exists is answered from it below, sold out or not).
            status = REJECTED_STATUS[refusal.reason]
            raise ProblemError(status, refusal.reason, refusal.message, checkout=None)
        fingerprint = request_hash(user.user_id, body)
        spec: dict[str, Any] = {
            "userId": user.user_id,
            "items": [
                {"productId": i.id, "unitPrice": i.price, "quantity": i.quantity}
                for i in body.products
            ],
            "paymentTTLSeconds": ttl,
        }
        if body.voucher:
            spec["voucher"] = body.voucher
        if body.customer:
            customer = body.customer.model_dump(exclude_none=True)
            keys = {
                "first_name": "firstName",
                "last_name": "lastName",
                "email": "email",
                "phone": "phone",
            }
            spec["customer"] = {keys[k]: v for k, v in customer.items()}
        resource = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": name,
                "labels": {USER_LABEL: _label(user.user_id)},
                "annotations": {REQUEST_HASH: fingerprint},
            },
            "spec": spec,
        }
        replayed = False
        # Waiting starts before the Checkout exists: the watch cannot miss its change.
        async with deps.watch.waiter(name) as ready:
            try:
                async with deps.quota.open_slot(user.user_id, name):
                    created = await deps.checkouts.create(resource)
            except Invalid as exc:
                raise ProblemError(422, "INVALID_CHECKOUT", str(exc)) from exc
            except AlreadyExists:
                existing = await deps.checkouts.get(name)
                if existing is None:  # archived already: answer from the read model
                    _, out = await own(user, name)
                    response.status_code = 200
                    response.headers["Idempotent-Replayed"] = "true"
                    return out
                if existing["metadata"].get("annotations", {}).get(REQUEST_HASH) != fingerprint:
                    raise _key_reused() from None
                created, replayed = existing, True
            settled = await deps.watch.wait(ready, created, deps.wait_seconds, deps.checkouts.get)
        out = _from_resource(settled)
        if out.phase == "AwaitingPayment" and not replayed:
            claim.reserved()
        elif out.failure_reason in ("OutOfStock", "InsufficientStock"):
            claim.sold_out()
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        if out.phase not in READY:
            response.status_code = 202
            response.headers["Location"] = out.status_url
            return out
        if out.phase == "Rejected":
            raise _refusal(REJECTED_STATUS.get(out.failure_reason or "", 409), out)
        if out.phase == "Cancelled" and out.failure_reason == "PaymentSetupFailed":
            raise _refusal(502, out)
        response.status_code = 200 if replayed else 201
        return out

    @api.get(
        "/checkouts",
        response_model=CheckoutPage,
        tags=["checkouts"],
        responses=problems.responses({**AUTH, **PAGE, **USER_SERVICE}),
    )
    async def mine(
        user: User,
        page_size: Annotated[int, Query(ge=1, le=100)] = 20,
        page_token: str | None = None,
    ) -> CheckoutPage:
        try:
            rows, token = await store.list_for_user(
                deps.readmodel, user.user_id, page_size, page_token
            )
        except InvalidPageToken as exc:
            raise ProblemError(422, "INVALID_PAGE_TOKEN", str(exc)) from exc
        return CheckoutPage(items=[_from_record(r) for r in rows], next_page_token=token)

    @api.get(
        "/checkouts/{checkout_id}",
        response_model=CheckoutOut,
        tags=["checkouts"],
        responses=problems.responses({**AUTH, **NOT_FOUND, **USER_SERVICE}),
    )
    async def one(checkout_id: str, user: User) -> CheckoutOut:
        _, out = await own(user, checkout_id)
        return out

    @api.post(
        "/checkouts/{checkout_id}/cancel",
        status_code=202,
        response_model=CheckoutOut,
        tags=["checkouts"],
        responses=problems.responses(
            {
                **AUTH,
                **NOT_FOUND,
                409: "ALREADY_FINISHED, or CONFLICT: it kept changing; retry",
                **USER_SERVICE,
            }
        ),
    )
    async def cancel(checkout_id: str, user: User) -> CheckoutOut:
        for _ in range(3):
            body, out = await own(user, checkout_id)
            if body is None or out.phase in TERMINAL:
                raise ProblemError(409, "ALREADY_FINISHED", f"checkout is {out.phase}")
            try:
                return _from_resource(await deps.checkouts.request_cancel(body))
            except ApiError as exc:
                if exc.status != 409:
                    raise
        raise ProblemError(409, "CONFLICT", "checkout kept changing; retry")

    @api.get(
        "/products/{product_id}/checkouts",
        response_model=SalePage,
        tags=["products"],
        responses=problems.responses(
            {
                **AUTH,
                403: "NOT_PRODUCT_OWNER: only the product's owner may list its checkouts",
                404: "PRODUCT_NOT_FOUND",
                **PAGE,
                503: "PRODUCT_SERVICE_UNAVAILABLE or USER_SERVICE_UNAVAILABLE: retry",
            }
        ),
    )
    async def product_checkouts(
        product_id: str,
        user: User,
        page_size: Annotated[int, Query(ge=1, le=100)] = 20,
        page_token: str | None = None,
    ) -> SalePage:
        not_found = ProblemError(404, "PRODUCT_NOT_FOUND", "no such product")
        if not bounds.possible_id(product_id):
            raise not_found
        try:
            product = await deps.products.GetProduct(
                product_pb2.GetProductRequest(id=product_id), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise not_found from exc
            raise _unavailable(
                "PRODUCT_SERVICE_UNAVAILABLE", "the product service is unavailable"
            ) from exc
        if product.owner_id != user.user_id:
            raise ProblemError(403, "NOT_PRODUCT_OWNER", "only the owner may list")
        try:
            rows, token = await store.list_for_product(
                deps.readmodel, product_id, page_size, page_token
            )
        except InvalidPageToken as exc:
            raise ProblemError(422, "INVALID_PAGE_TOKEN", str(exc)) from exc
        return SalePage(items=[_sale(r, product_id) for r in rows], next_page_token=token)

    app.include_router(api)

    @app.get("/healthz", tags=["probes"], responses=problems.responses({}))
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["probes"],
        responses=problems.responses(
            {
                503: "READ_MODEL_UNAVAILABLE: Postgres does not answer;"
                " TOKEN_KEYS_UNAVAILABLE: no token can be verified yet"
            }
        ),
    )
    async def readyz() -> dict[str, str]:
        await deps.readmodel.fetchval("SELECT 1")
        # Once held, keys serve through a User service outage: only the first fetch
        # gates readiness, so an outage later does not take every replica out.
        if deps.token_keys is not None and not await deps.token_keys.ready():
            raise _unavailable(
                "TOKEN_KEYS_UNAVAILABLE", "the User service has not published its token keys"
            )
        return {"status": "ready"}

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> ProblemResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return problem(
            exc.status, exc.reason, exc.message, instance=request.url.path, headers=headers
        )

    problems.install(
        app,
        outages={
            aiohttp.ClientError: "APISERVER_UNAVAILABLE",
            asyncpg.PostgresError: "READ_MODEL_UNAVAILABLE",
            OSError: "READ_MODEL_UNAVAILABLE",
        },
    )
    app.add_middleware(BodyLimit)
    return app


def _same_lines(row: dict[str, Any], body: CheckoutRequest) -> bool:
    """Whether an archived checkout is what this request asks for (its lines)."""
    had = sorted((i["product_id"], i["unit_price"], i["quantity"]) for i in row["items"])
    return had == sorted((i.id, i.price, i.quantity) for i in body.products)


def _key_reused() -> ProblemError:
    return ProblemError(
        422, "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for a different checkout"
    )


def _not_found(checkout_id: str) -> ProblemError:
    return ProblemError(404, "CHECKOUT_NOT_FOUND", f"no checkout {checkout_id[:64]}")


def _unavailable(reason: str, detail: str) -> ProblemError:
    return ProblemError(
        503, reason, f"{detail}; retry", headers={"Retry-After": str(problems.RETRY_AFTER_SECONDS)}
    )


def _label(value: str) -> str:
    """A label value (63 chars of [A-Za-z0-9._-]); user ids are UUIDs, others are hashed."""
    ok = len(value) <= 63 and all(c.isalnum() or c in "._-" for c in value)
    return value if ok else hashlib.sha256(value.encode()).hexdigest()[:63]


def _refusal(status: int, out: CheckoutOut) -> ProblemError:
    """The saga's answer as an error: its reason and message, and the checkout."""
    return ProblemError(
        status,
        out.failure_reason or "Rejected",
        out.failure_message or f"the checkout ended {out.phase}",
        checkout=out.model_dump(mode="json"),
    )


def _unauthorized(reason: str, message: str) -> ProblemError:
    return ProblemError(401, reason, message, headers={"WWW-Authenticate": "Bearer"})
