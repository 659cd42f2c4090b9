"""REST transport of the User service (FastAPI), for the shop's front end.

Routes live under ``/api/v1``; ``/healthz`` and ``/readyz`` are at the root for
the kubelet. Refusals are problem documents (``saga_kit.problems``, RFC 9457) whose
``reason`` is the gRPC contract's, and every 401 says ``WWW-Authenticate: Bearer``
(RFC 6750). Validation errors are a 422 naming each field in ``errors``, never with
the offending input, which for a password would be echoed back (and maybe logged by
a proxy).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, field_validator, model_validator

from saga_kit import problems
from saga_kit.problems import ProblemError, problem
from saga_kit.request_bodies import BodyLimit, StrictJsonRoute

from .domain import (
    EMAIL_MAX_LENGTH,
    PASSWORD_MAX_LENGTH,
    Accounts,
    Authenticated,
    ErrorKind,
    User,
    UserError,
    check_password,
    normalize_email,
    normalize_username,
)
from .store import OUTAGES as _OUTAGES

log = logging.getLogger(__name__)

_STATUS = {
    ErrorKind.INVALID: status.HTTP_422_UNPROCESSABLE_CONTENT,
    ErrorKind.CONFLICT: status.HTTP_409_CONFLICT,
    ErrorKind.UNAUTHENTICATED: status.HTTP_401_UNAUTHORIZED,
    ErrorKind.NOT_FOUND: status.HTTP_404_NOT_FOUND,
}


ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


# ---------------------------------------------------------------------------
# Bodies


class RegisterRequest(BaseModel):
    username: str = Field(examples=["alice"])
    email: str = Field(examples=["alice@example.com"])
    password: str = Field(repr=False)

    # The rules (and the normalisation to lower case) are the domain's; the
    # validators only turn their ValueError into a 422 naming the field.
    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        return normalize_username(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalize_email(value)

    @field_validator("password")
    @classmethod
    def _password(cls, value: str) -> str:
        return check_password(value)


class LoginRequest(BaseModel):
    """Log in with the username or the email address, not both."""

    username: str | None = Field(default=None, min_length=1, max_length=EMAIL_MAX_LENGTH)
    email: str | None = Field(default=None, min_length=1, max_length=EMAIL_MAX_LENGTH)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX_LENGTH, repr=False)

    @model_validator(mode="after")
    def _one_identifier(self) -> LoginRequest:
        if (self.username is None) == (self.email is None):
            raise ValueError("give exactly one of username or email")
        return self


class UserOut(BaseModel):
    id: str
    username: str
    email: str
    created_at: dt.datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(id=user.id, username=user.username, email=user.email, created_at=user.created_at)


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a scheme name, not a secret)
    expires_at: dt.datetime
    expires_in: int = Field(description="seconds until expires_at")


# ---------------------------------------------------------------------------
# Errors


def _error(
    request: Request, status_code: int, reason: str, message: str, *, bearer_error: str = ""
) -> Response:
    headers = {}
    if status_code == status.HTTP_401_UNAUTHORIZED:
        # RFC 6750: error="invalid_token" when a token was presented and refused;
        # a bare challenge when there was none or the credentials were a password.
        challenge = "Bearer"
        if bearer_error:
            description = message.replace('"', "'")
            challenge += f' error="{bearer_error}", error_description="{description}"'
        headers["WWW-Authenticate"] = challenge
    return problem(status_code, reason, message, instance=request.url.path, headers=headers)


class _BearerRequired(Exception):
    """No bearer token was presented."""


async def _user_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UserError)
    if exc.kind is ErrorKind.INVALID and exc.field:
        error = {"loc": ["body", exc.field], "msg": exc.message, "type": "value_error"}
        return problems.invalid([error], instance=request.url.path, reason=exc.reason)
    token_refusal = exc.reason.startswith("TOKEN_")
    return _error(
        request,
        _STATUS[exc.kind],
        exc.reason,
        exc.message,
        bearer_error="invalid_token" if token_refusal else "",
    )


async def _bearer_required(request: Request, exc: Exception) -> Response:
    return _error(
        request,
        status.HTTP_401_UNAUTHORIZED,
        "TOKEN_MISSING",
        "this endpoint needs an access token: Authorization: Bearer <token>",
    )


async def _outage(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed: store or Redis unavailable: %r", request.method, request.url.path, exc)
    return problem(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "STORE_UNAVAILABLE",
        "the user store is unavailable, retry later",
        instance=request.url.path,
        headers={"Retry-After": str(problems.RETRY_AFTER_SECONDS)},
    )


# ---------------------------------------------------------------------------
# The app


_bearer = HTTPBearer(auto_error=False, description="an access token from POST /auth/login")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        raise _BearerRequired
    return credentials.credentials


# The use cases and the readiness check are put on app.state by build_rest_app, so
# the routes below are plain module-level functions and each app (one per test,
# say) carries its own resources.
def _accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


AccountsDep = Annotated[Accounts, Depends(_accounts)]


async def _current(accounts: AccountsDep, credentials: BearerCredentials) -> Authenticated:
    return await accounts.authenticate(_token(credentials))


CurrentUser = Annotated[Authenticated, Depends(_current)]

_OUTAGE = {503: "STORE_UNAVAILABLE: Postgres or Redis does not answer; retry"}
_BODY = {
    413: "BODY_TOO_LARGE",
    422: "INVALID_REQUEST or the domain's reason: errors names each invalid field",
    400: "MALFORMED: the body is not JSON",
}
_REFUSALS = problems.responses(
    {401: "TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED or TOKEN_REVOKED", **_OUTAGE}
)

api = APIRouter(prefix="/api/v1", route_class=StrictJsonRoute)


@api.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    tags=["users"],
    responses=problems.responses({409: "USERNAME_TAKEN or EMAIL_TAKEN", **_BODY, **_OUTAGE}),
)
async def register(body: RegisterRequest, accounts: AccountsDep) -> UserOut:
    user = await accounts.register(body.username, body.email, body.password)
    log.info("registered user %s", user.id)
    return UserOut.of(user)


@api.post(
    "/auth/login",
    response_model=TokenOut,
    tags=["auth"],
    responses=problems.responses({401: "INVALID_CREDENTIALS", **_BODY, **_OUTAGE}),
)
async def login(body: LoginRequest, accounts: AccountsDep) -> TokenOut:
    issued = await accounts.login(body.password, username=body.username, email=body.email)
    return TokenOut(
        access_token=issued.token,
        expires_at=issued.expires_at,
        expires_in=issued.expires_in(accounts.now()),
    )


@api.get("/users/me", response_model=UserOut, tags=["users"], responses=_REFUSALS)
async def me(auth: CurrentUser) -> UserOut:
    return UserOut.of(auth.user)


@api.post(
    "/auth/logout", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"], responses=_REFUSALS
)
async def logout(credentials: BearerCredentials, accounts: AccountsDep) -> Response:
    await accounts.logout(_token(credentials))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


probes = APIRouter()


@probes.get("/healthz", tags=["probes"], responses=problems.responses({}))
async def healthz() -> dict[str, str]:
    """Liveness: the process answers; says nothing about its dependencies."""
    return {"status": "ok"}


@probes.get(
    "/readyz",
    tags=["probes"],
    responses=problems.responses({503: "NOT_READY: the checks member says which failed"}),
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: Postgres and Redis both answer."""
    readiness: ReadinessCheck = request.app.state.readiness
    checks = await readiness()
    if not all(checks.values()):
        failed = ", ".join(name for name, ok in checks.items() if not ok)
        raise ProblemError(503, "NOT_READY", f"not answering: {failed}", checks=checks)
    return JSONResponse({"status": "ok", "checks": checks})


def build_rest_app(accounts: Accounts, readiness: ReadinessCheck) -> FastAPI:
    """The FastAPI app on already-open resources (the caller owns their lifetime)."""
    app = FastAPI(title="checkout-saga user service", version="1")
    app.state.accounts = accounts
    app.state.readiness = readiness
    app.include_router(api)
    app.include_router(probes)
    app.add_exception_handler(UserError, _user_error)
    app.add_exception_handler(_BearerRequired, _bearer_required)
    for outage in _OUTAGES:
        app.add_exception_handler(outage, _outage)
    problems.install(app)
    app.add_middleware(BodyLimit)
    return app
