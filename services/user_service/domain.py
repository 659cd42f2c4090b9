"""The User service's rules: accounts, password hashing, access tokens.

Nothing here talks to a database, Redis or the network: the use cases
(:class:`Accounts`) reach storage through two small ports (:class:`UserStore`,
:class:`RevocationList`) that ``store`` and ``revocations`` implement, so the
rules can be tested alone and both transports (REST and gRPC) share them.

Why these choices:

* Passwords are hashed with scrypt (memory-hard; in the standard library) with a
  random salt per user. The parameters travel inside the hash string
  (``scrypt$n$r$p$salt$hash``), so stronger parameters later do not break the
  hashes already stored. Hashing runs in a worker thread, a bounded number at a
  time: it takes a quarter of a second and 32 MiB on purpose, and must neither
  stall the event loop nor let a burst of logins exhaust memory.
* A login for an unknown user still runs one full verification against a dummy
  hash, and answers with the same error as a wrong password, so neither the
  answer nor its timing tells whether an account exists.
* Access tokens are HS256 JWTs with ``sub``, ``jti``, ``iat``, ``exp`` and a fixed
  issuer; all are required. Expiry is checked against an injected clock so the
  rules are testable without sleeping. Revocation (logout) is by ``jti``, kept
  only until the token would have expired anyway.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import enum
import functools
import hashlib
import hmac
import math
import os
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import jwt

from saga_kit.settings import Secret

ISSUER = "checkout-saga-user"
ALGORITHM = "HS256"

USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 32
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
EMAIL_MAX_LENGTH = 254  # RFC 5321: the longest address a mail server has to accept
# No token this service issues comes near this; refusing longer ones early keeps
# garbage from reaching the JWT parser.
TOKEN_MAX_LENGTH = 4096
# Tolerated clock difference between replicas for a token's issue time.
CLOCK_SKEW = dt.timedelta(seconds=30)

# ASCII only, on purpose: non-ASCII letters would make look-alike names possible
# and str.lower() maps a few of them onto ASCII ones (the Kelvin sign onto "k").
_USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
# A pragmatic address check (dot-atom local part, a domain of LDH labels with an
# alphabetic top level); whether the mailbox exists is not ours to decide here.
_EMAIL_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_EMAIL_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_EMAIL_RE = re.compile(f"({_EMAIL_LOCAL})@({_EMAIL_DOMAIN})")


_T = TypeVar("_T")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------------------
# Errors


class ErrorKind(enum.Enum):
    """What went wrong, independent of transport; REST and gRPC map it to a status."""

    INVALID = "invalid"
    CONFLICT = "conflict"
    UNAUTHENTICATED = "unauthenticated"
    NOT_FOUND = "not_found"


class TokenFailure(enum.StrEnum):
    """Why an access token is refused (the ErrorInfo reasons of the gRPC contract)."""

    INVALID = "TOKEN_INVALID"
    EXPIRED = "TOKEN_EXPIRED"
    REVOKED = "TOKEN_REVOKED"


class UserError(Exception):
    """A refusal the caller can act on: a kind, a stable reason and a message."""

    def __init__(
        self,
        kind: ErrorKind,
        reason: str,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        field: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.field = field


def invalid_input(field_name: str, message: str) -> UserError:
    return UserError(ErrorKind.INVALID, "INVALID_ARGUMENT", message, field=field_name)


def username_taken() -> UserError:
    return UserError(ErrorKind.CONFLICT, "USERNAME_TAKEN", "this username is already taken")


def email_taken() -> UserError:
    return UserError(
        ErrorKind.CONFLICT, "EMAIL_TAKEN", "an account with this email address already exists"
    )


def invalid_credentials() -> UserError:
    # One message for an unknown account and a wrong password: which of the two
    # it was is exactly what an attacker enumerating accounts wants to learn.
    return UserError(
        ErrorKind.UNAUTHENTICATED, "INVALID_CREDENTIALS", "invalid username, email or password"
    )


def user_not_found(user_id: str) -> UserError:
    return UserError(
        ErrorKind.NOT_FOUND, "USER_NOT_FOUND", "no user has this id", metadata={"user_id": user_id}
    )


def token_rejected(failure: TokenFailure, message: str) -> UserError:
    return UserError(ErrorKind.UNAUTHENTICATED, failure.value, message)


# ---------------------------------------------------------------------------
# Input rules (used by the REST models too, so there is one definition)


def normalize_username(raw: str) -> str:
    """The stored (lower-case) form; usernames are unique regardless of case."""
    if not USERNAME_MIN_LENGTH <= len(raw) <= USERNAME_MAX_LENGTH:
        raise ValueError(f"must be {USERNAME_MIN_LENGTH} to {USERNAME_MAX_LENGTH} characters long")
    if not _USERNAME_RE.fullmatch(raw):
        raise ValueError("may contain only letters a-z, digits and the characters _ . -")
    return raw.lower()


def normalize_email(raw: str) -> str:
    """The stored (lower-case) form; one account per address, whatever its case."""
    if len(raw) > EMAIL_MAX_LENGTH or not _EMAIL_RE.fullmatch(raw):
        raise ValueError("must be a valid email address")
    local = raw.split("@", 1)[0]
    if len(local) > 64:  # RFC 5321 limit of the local part
        raise ValueError("must be a valid email address")
    return raw.lower()


def check_password(raw: str) -> str:
    """Length rules only: composition rules make passwords weaker (NIST SP 800-63B)."""
    if not PASSWORD_MIN_LENGTH <= len(raw) <= PASSWORD_MAX_LENGTH:
        raise ValueError(f"must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters long")
    return raw


# ---------------------------------------------------------------------------
# Password hashing


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost. The default is one of OWASP's equivalent minimums (2^15, 8, 3):
    32 MiB of memory per hash and about 0.25 s of one core."""

    n: int = 2**15
    r: int = 8
    p: int = 3
    salt_bytes: int = 16
    key_bytes: int = 32

    def __post_init__(self) -> None:
        if self.n < 2 or self.n & (self.n - 1) or self.n > 2**20:
            raise ValueError("scrypt n must be a power of two between 2 and 2^20")
        if not 1 <= self.r <= 32 or not 1 <= self.p <= 16:
            raise ValueError("scrypt r must be 1-32 and p 1-16")
        if not 8 <= self.salt_bytes <= 64 or not 16 <= self.key_bytes <= 64:
            raise ValueError("scrypt salt must be 8-64 bytes and the key 16-64 bytes")

    @property
    def maxmem(self) -> int:
        # OpenSSL needs 128*r*(n+2) bytes for V plus 128*r*p for B; hashlib's default
        # limit (32 MiB) is just below what n=2^15, r=8 needs.
        return 128 * self.r * (self.n + self.p + 2) + 2**20


DEFAULT_SCRYPT = ScryptParams()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, params: ScryptParams, key_bytes: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=params.maxmem,
        dklen=key_bytes,
    )


def hash_password(password: str, params: ScryptParams = DEFAULT_SCRYPT) -> str:
    """``scrypt$n$r$p$salt$key`` with a fresh random salt (URL-safe base64, no padding)."""
    salt = secrets.token_bytes(params.salt_bytes)
    key = _scrypt(password, salt, params, params.key_bytes)
    return f"scrypt${params.n}${params.r}${params.p}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` produces ``encoded``; False for a mismatch or a malformed hash."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        # The parameters are validated before use so a corrupted row cannot ask
        # for gigabytes of memory.
        params = ScryptParams(n=int(parts[1]), r=int(parts[2]), p=int(parts[3]))
        salt, expected = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, binascii.Error):
        return False
    if not salt or not 16 <= len(expected) <= 64:
        return False
    actual = _scrypt(password, salt, params, len(expected))
    return hmac.compare_digest(actual, expected)


@functools.cache
def _dummy_hash(params: ScryptParams) -> str:
    return hash_password(secrets.token_urlsafe(16), params)


def burn_verification(password: str, params: ScryptParams = DEFAULT_SCRYPT) -> None:
    """Spend what a real verification costs, for a login whose account does not exist."""
    verify_password(password, _dummy_hash(params))


# ---------------------------------------------------------------------------
# Access tokens


@dataclass(frozen=True)
class AccessToken:
    """A freshly issued token and what the client needs to know about it."""

    token: str = field(repr=False)
    jti: str
    user_id: str
    issued_at: dt.datetime
    expires_at: dt.datetime

    def expires_in(self, now: dt.datetime) -> int:
        return max(0, math.ceil((self.expires_at - now).total_seconds()))


@dataclass(frozen=True)
class TokenClaims:
    """The verified content of a token."""

    user_id: str
    jti: str
    issued_at: dt.datetime
    expires_at: dt.datetime

    def remaining_seconds(self, now: dt.datetime) -> int:
        """Whole seconds until expiry, rounded up (a revocation must outlive the token)."""
        return max(0, math.ceil((self.expires_at - now).total_seconds()))


class TokenCodec:
    """Issues and verifies the service's access tokens (HS256, one shared key)."""

    def __init__(self, secret: Secret, ttl_seconds: int, issuer: str = ISSUER) -> None:
        if ttl_seconds <= 0:
            raise ValueError("the token lifetime must be positive")
        self._key = secret.value
        self._ttl = dt.timedelta(seconds=ttl_seconds)
        self._issuer = issuer

    def issue(self, user_id: str, now: dt.datetime) -> AccessToken:
        # JWT times are whole seconds; truncating here keeps expires_at in the
        # answer identical to the exp inside the token.
        issued = now.replace(microsecond=0)
        expires = issued + self._ttl
        jti = str(uuid.uuid4())
        claims = {
            "iss": self._issuer,
            "sub": user_id,
            "jti": jti,
            "iat": int(issued.timestamp()),
            "exp": int(expires.timestamp()),
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        return AccessToken(
            token=token, jti=jti, user_id=user_id, issued_at=issued, expires_at=expires
        )

    def verify(self, token: str, now: dt.datetime) -> TokenClaims:
        """The claims of a valid token; :class:`UserError` (UNAUTHENTICATED) otherwise.

        The signature and issuer are checked first, so a forged token is always
        TOKEN_INVALID, whatever its ``exp`` says; only a genuine token can be
        TOKEN_EXPIRED.
        """
        if not token or len(token) > TOKEN_MAX_LENGTH:
            raise token_rejected(TokenFailure.INVALID, "the access token is malformed")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],  # never "none", never an algorithm the token picks
                issuer=self._issuer,
                options={
                    "require": ["iss", "sub", "jti", "iat", "exp"],
                    # Times are checked below against the injected clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError as exc:
            raise token_rejected(
                TokenFailure.INVALID, "the access token's signature is invalid"
            ) from exc
        except jwt.InvalidIssuerError as exc:
            raise token_rejected(
                TokenFailure.INVALID, "the access token has a wrong issuer"
            ) from exc
        except jwt.MissingRequiredClaimError as exc:
            raise token_rejected(
                TokenFailure.INVALID, f"the access token lacks the {exc.claim!r} claim"
            ) from exc
        except jwt.InvalidTokenError as exc:
            raise token_rejected(TokenFailure.INVALID, "the access token is malformed") from exc

        sub, jti, iat, exp = payload["sub"], payload["jti"], payload["iat"], payload["exp"]
        if not isinstance(sub, str) or not sub or not isinstance(jti, str) or not jti:
            raise token_rejected(TokenFailure.INVALID, "the access token's sub or jti is invalid")
        # bool is an int in Python; a JSON true is not a time.
        if any(not isinstance(v, int) or isinstance(v, bool) for v in (iat, exp)):
            raise token_rejected(TokenFailure.INVALID, "the access token's iat or exp is invalid")
        try:
            issued_at = dt.datetime.fromtimestamp(iat, dt.UTC)
            expires_at = dt.datetime.fromtimestamp(exp, dt.UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise token_rejected(
                TokenFailure.INVALID, "the access token's iat or exp is out of range"
            ) from exc
        if issued_at > now + CLOCK_SKEW or expires_at <= issued_at:
            raise token_rejected(TokenFailure.INVALID, "the access token's times are inconsistent")
        if expires_at <= now:
            raise token_rejected(TokenFailure.EXPIRED, "the access token has expired")
        return TokenClaims(user_id=sub, jti=jti, issued_at=issued_at, expires_at=expires_at)


# ---------------------------------------------------------------------------
# Users and the use cases


@dataclass(frozen=True)
class User:
    """A user as everyone may see it (never with the password hash)."""

    id: str
    username: str
    email: str
    created_at: dt.datetime


@dataclass(frozen=True)
class NewUser:
    id: str
    username: str
    email: str
    password_hash: str = field(repr=False)


@dataclass(frozen=True)
class StoredCredentials:
    user: User
    password_hash: str = field(repr=False)


class UserStore(Protocol):
    """Persistence of users (implemented by ``store.PgUserStore``)."""

    async def insert(self, new: NewUser) -> User:
        """Raises the :func:`username_taken` / :func:`email_taken` errors on a duplicate."""
        ...

    async def get(self, user_id: str) -> User | None: ...

    async def credentials_by_username(self, username: str) -> StoredCredentials | None: ...

    async def credentials_by_email(self, email: str) -> StoredCredentials | None: ...


class RevocationList(Protocol):
    """Revoked token ids (implemented by ``revocations.RedisRevocations``)."""

    async def revoke(self, jti: str, ttl_seconds: int) -> None: ...

    async def is_revoked(self, jti: str) -> bool: ...


@dataclass(frozen=True)
class Authenticated:
    user: User
    claims: TokenClaims


class Accounts:
    """The use cases both transports call: register, login, authenticate, logout, get."""

    def __init__(
        self,
        store: UserStore,
        revocations: RevocationList,
        tokens: TokenCodec,
        *,
        scrypt: ScryptParams = DEFAULT_SCRYPT,
        clock: Callable[[], dt.datetime] = utc_now,
        kdf_concurrency: int | None = None,
    ) -> None:
        self._store = store
        self._revocations = revocations
        self._tokens = tokens
        self._scrypt = scrypt
        self._clock = clock
        # Each KDF run holds ~32 MiB and a core for a quarter second: a burst of
        # logins queues here instead of exhausting memory or the default thread
        # pool (which asyncio also needs, e.g. for DNS look-ups).
        self._kdf_slots = asyncio.Semaphore(kdf_concurrency or os.cpu_count() or 2)

    async def _kdf(self, fn: Callable[..., _T], *args: Any) -> _T:
        async with self._kdf_slots:
            return await asyncio.to_thread(fn, *args)

    def now(self) -> dt.datetime:
        return self._clock()

    async def register(self, username: str, email: str, password: str) -> User:
        try:
            name = normalize_username(username)
        except ValueError as exc:
            raise invalid_input("username", f"username {exc}") from exc
        try:
            address = normalize_email(email)
        except ValueError as exc:
            raise invalid_input("email", f"email {exc}") from exc
        try:
            check_password(password)
        except ValueError as exc:
            raise invalid_input("password", f"password {exc}") from exc
        password_hash = await self._kdf(hash_password, password, self._scrypt)
        # No look-up first: the unique constraints decide, so two concurrent
        # registrations of one name cannot both pass a check and both insert.
        return await self._store.insert(
            NewUser(id=str(uuid.uuid4()), username=name, email=address, password_hash=password_hash)
        )

    async def login(
        self, password: str, *, username: str | None = None, email: str | None = None
    ) -> AccessToken:
        if (username is None) == (email is None):
            raise invalid_input("username", "give exactly one of username or email")
        if username is not None:
            found = await self._store.credentials_by_username(username.lower())
        else:
            assert email is not None
            found = await self._store.credentials_by_email(email.lower())
        if found is None:
            await self._kdf(burn_verification, password, self._scrypt)
            raise invalid_credentials()
        if not await self._kdf(verify_password, password, found.password_hash):
            raise invalid_credentials()
        return self._tokens.issue(found.user.id, self.now())

    async def authenticate(self, token: str) -> Authenticated:
        claims = self._tokens.verify(token, self.now())
        if await self._revocations.is_revoked(claims.jti):
            raise token_rejected(TokenFailure.REVOKED, "the access token has been revoked")
        user = await self._store.get(claims.user_id)
        if user is None:
            raise token_rejected(TokenFailure.INVALID, "the access token's user does not exist")
        return Authenticated(user=user, claims=claims)

    async def logout(self, token: str) -> None:
        """Revoke the token until it expires; a token that is not valid now is refused."""
        claims = (await self.authenticate(token)).claims
        remaining = claims.remaining_seconds(self.now())
        if remaining > 0:
            await self._revocations.revoke(claims.jti, remaining)

    async def get_user(self, user_id: str) -> User:
        if not user_id:
            raise invalid_input("id", "id must not be empty")
        user = await self._store.get(user_id)
        if user is None:
            raise user_not_found(user_id)
        return user
