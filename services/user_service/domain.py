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
* Access tokens are EdDSA JWTs signed with the first of the service's keys; their
  format and checks are the shared contract in :mod:`saga_kit.access_tokens`, since
  the REST APIs verify them too (with the public keys, :meth:`TokenCodec.public_keys`).
  Expiry is checked against an injected clock so the rules are testable without
  sleeping. Revocation (logout) is by ``jti``, kept only until no verifier would
  accept the token anyway.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from saga_kit import access_tokens
from saga_kit.access_tokens import SigningKey, TokenClaims, TokenFailure, TokenRefused

USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 32
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
EMAIL_MAX_LENGTH = 254  # RFC 5321: the longest address a mail server has to accept

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


class TokenCodec:
    """Issues tokens with the first key and verifies those of any of ``keys``."""

    def __init__(self, keys: Sequence[SigningKey], ttl_seconds: int) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        if ttl_seconds <= 0:
            raise ValueError("the token lifetime must be positive")
        self._signer = keys[0]
        self._public = {k.kid: k.public for k in keys}
        self._ttl = dt.timedelta(seconds=ttl_seconds)

    @property
    def signing_kid(self) -> str:
        return self._signer.kid

    def public_keys(self) -> Mapping[str, Ed25519PublicKey]:
        """By kid: every key a token this service issued may carry."""
        return dict(self._public)

    def issue(self, user: User, now: dt.datetime) -> AccessToken:
        # JWT times are whole seconds; truncating here keeps expires_at in the
        # answer identical to the exp inside the token.
        issued = now.replace(microsecond=0)
        claims = TokenClaims(
            user_id=user.id,
            username=user.username,
            jti=str(uuid.uuid4()),
            issued_at=issued,
            expires_at=issued + self._ttl,
        )
        return AccessToken(
            token=access_tokens.sign(self._signer, claims),
            jti=claims.jti,
            user_id=user.id,
            issued_at=issued,
            expires_at=claims.expires_at,
        )

    def verify(self, token: str, now: dt.datetime) -> TokenClaims:
        """The claims of a valid token; :class:`UserError` (UNAUTHENTICATED) otherwise."""
        try:
            return access_tokens.verify(token, self._public, now)
        except TokenRefused as exc:
            raise token_rejected(exc.failure, exc.message) from exc


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

    def public_keys(self) -> Mapping[str, Ed25519PublicKey]:
        """The keys tokens are verified with, by kid (published for the REST APIs)."""
        return self._tokens.public_keys()

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
        return self._tokens.issue(found.user, self.now())

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
