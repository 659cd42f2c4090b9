"""The access token contract: how the User service signs a token and how anyone checks it.

The User service signs with an Ed25519 private key (JWT ``alg`` EdDSA) and publishes
the public halves (``ListSigningKeys``), so a REST API verifies a token itself, with
no round trip, and cannot mint one. Every token names its key in the header
(``kid``, derived from the public key, so configuration is only the PEM): the User
service may hold several keys, the first signs and the others still verify until
the tokens they signed have expired (rotation).

A token carries ``iss``, ``sub`` (the user id), ``preferred_username``, ``jti``,
``iat`` and ``exp``, all required. Usernames never change and users are never
deleted, so a verified token names an existing user without reading the store.

Logout revokes a token by ``jti``: the User service writes ``user:revoked:<jti>``
in Redis (:func:`revoked_key`) until the token would be refused as expired anyway,
and every verifier reads it there.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ISSUER = "checkout-saga-user"
ALGORITHM = "EdDSA"
# No token the User service issues comes near this; refusing longer ones early keeps
# garbage from reaching the JWT parser.
TOKEN_MAX_LENGTH = 4096
# Tolerated clock difference between hosts: a token issued "in the future" by up to
# this much is fine, and one is still accepted this long after its exp.
CLOCK_SKEW = dt.timedelta(seconds=30)
EXPIRY_LEEWAY = dt.timedelta(seconds=5)
REVOKED_KEY_PREFIX = "user:revoked:"

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


class TokenFailure(enum.StrEnum):
    """Why an access token is refused (the ErrorInfo reasons of the gRPC contract and
    the 401 reasons of the REST APIs)."""

    INVALID = "TOKEN_INVALID"
    EXPIRED = "TOKEN_EXPIRED"
    REVOKED = "TOKEN_REVOKED"


class TokenRefused(Exception):
    def __init__(self, failure: TokenFailure, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message


def revoked_key(jti: str) -> str:
    """The Redis key whose presence means the token ``jti`` is revoked."""
    return f"{REVOKED_KEY_PREFIX}{jti}"


# ---------------------------------------------------------------------------
# Keys


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name of a public key: 128 bits of its SHA-256, base64url."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:16]).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey = field(repr=False)
    kid: str

    @classmethod
    def of(cls, private: Ed25519PrivateKey) -> SigningKey:
        return cls(private, key_id(private.public_key()))

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()


def new_private_key_pem() -> str:
    """A fresh Ed25519 private key, PKCS#8 PEM (what ``openssl genpkey -algorithm
    ed25519`` and Helm's ``genPrivateKey "ed25519"`` write)."""
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def load_signing_keys(pem: str) -> tuple[SigningKey, ...]:
    """Every private key in ``pem`` (concatenated PEM blocks), in order; ValueError
    for none, a block that is not an Ed25519 private key, or one given twice."""
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(pem)]
    if not blocks:
        raise ValueError("holds no PEM private key")
    keys = []
    for number, block in enumerate(blocks, 1):
        try:
            private = serialization.load_pem_private_key(block.encode(), password=None)
        except (ValueError, TypeError) as exc:  # the message of either names no key material
            raise ValueError(f"key {number} is not a readable unencrypted private key") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"key {number} is not an Ed25519 key")
        keys.append(SigningKey.of(private))
    if len({k.kid for k in keys}) != len(keys):
        raise ValueError("holds the same key twice")
    return tuple(keys)


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: str) -> Ed25519PublicKey:
    """ValueError unless ``pem`` is one Ed25519 public key."""
    try:
        public = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError("not a readable public key") from exc
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return public


# ---------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True)
class TokenClaims:
    """The verified content of a token."""

    user_id: str
    username: str
    jti: str
    issued_at: dt.datetime
    expires_at: dt.datetime

    def remaining_seconds(self, now: dt.datetime) -> int:
        """Whole seconds, rounded up, until no verifier accepts the token any more (its
        exp plus the leeway, by a verifier's clock up to CLOCK_SKEW behind ours): how
        long a revocation must be kept."""
        left = self.expires_at + EXPIRY_LEEWAY + CLOCK_SKEW - now
        return max(0, math.ceil(left.total_seconds()))


def sign(key: SigningKey, claims: TokenClaims) -> str:
    payload = {
        "iss": ISSUER,
        "sub": claims.user_id,
        "preferred_username": claims.username,
        "jti": claims.jti,
        "iat": int(claims.issued_at.timestamp()),
        "exp": int(claims.expires_at.timestamp()),
    }
    return jwt.encode(payload, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})


def key_id_of(token: str) -> str:
    """The ``kid`` a token names (unverified), "" when it names none or is malformed."""
    if not token or len(token) > TOKEN_MAX_LENGTH:
        return ""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError:
        return ""
    return kid if isinstance(kid, str) else ""


def verify(token: str, keys: Mapping[str, Ed25519PublicKey], now: dt.datetime) -> TokenClaims:
    """The claims of a token valid at ``now``; :class:`TokenRefused` otherwise.

    The signature and issuer are checked first, so a forged token is always
    TOKEN_INVALID, whatever its ``exp`` says; only a genuine token can be TOKEN_EXPIRED.
    """
    public = keys.get(key_id_of(token))
    if public is None:
        raise TokenRefused(TokenFailure.INVALID, "the access token is malformed or its key unknown")
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            public,
            algorithms=[ALGORITHM],  # never "none", never an algorithm the token picks
            issuer=ISSUER,
            options={
                "require": ["iss", "sub", "preferred_username", "jti", "iat", "exp"],
                # Times are checked below against the caller's clock.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidSignatureError as exc:
        raise TokenRefused(TokenFailure.INVALID, "the access token's signature is invalid") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenRefused(TokenFailure.INVALID, "the access token has a wrong issuer") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRefused(
            TokenFailure.INVALID, f"the access token lacks the {exc.claim!r} claim"
        ) from exc
    except jwt.InvalidTokenError as exc:
        raise TokenRefused(TokenFailure.INVALID, "the access token is malformed") from exc
    return _claims(payload, now)


def _claims(payload: dict[str, Any], now: dt.datetime) -> TokenClaims:
    sub, name, jti = payload["sub"], payload["preferred_username"], payload["jti"]
    if not all(isinstance(v, str) and v for v in (sub, name, jti)):
        raise TokenRefused(
            TokenFailure.INVALID, "the access token's sub, preferred_username or jti is invalid"
        )
    iat, exp = payload["iat"], payload["exp"]
    # bool is an int in Python; a JSON true is not a time.
    if any(not isinstance(v, int) or isinstance(v, bool) for v in (iat, exp)):
        raise TokenRefused(TokenFailure.INVALID, "the access token's iat or exp is invalid")
    try:
        issued_at = dt.datetime.fromtimestamp(iat, dt.UTC)
        expires_at = dt.datetime.fromtimestamp(exp, dt.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise TokenRefused(
            TokenFailure.INVALID, "the access token's iat or exp is out of range"
        ) from exc
    if issued_at > now + CLOCK_SKEW or expires_at <= issued_at:
        raise TokenRefused(TokenFailure.INVALID, "the access token's times are inconsistent")
    if expires_at + EXPIRY_LEEWAY <= now:
        raise TokenRefused(TokenFailure.EXPIRED, "the access token has expired")
    return TokenClaims(
        user_id=sub, username=name, jti=jti, issued_at=issued_at, expires_at=expires_at
    )
