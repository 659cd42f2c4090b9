"""The User service's rules: input normalisation, the password KDF, access tokens,
and the use cases on in-memory ports (no server needed)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from saga_kit import access_tokens
from saga_kit.access_tokens import CLOCK_SKEW, EXPIRY_LEEWAY, SigningKey, TokenFailure
from user_service import domain
from user_service.domain import (
    Accounts,
    ErrorKind,
    NewUser,
    ScryptParams,
    StoredCredentials,
    TokenCodec,
    User,
    UserError,
    check_password,
    hash_password,
    normalize_email,
    normalize_username,
    verify_password,
)

KEY = SigningKey.of(Ed25519PrivateKey.generate())
OTHER_KEY = SigningKey.of(Ed25519PrivateKey.generate())
NOW = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
USER = User(id="user-1", username="alice", email="alice@example.com", created_at=NOW)
# Cheap parameters where the cost is beside the point; the default is tested too.
FAST = ScryptParams(n=2**10, r=8, p=1)


# --- input rules -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("alice", "alice"),
        ("Alice", "alice"),
        ("a.b-c_9", "a.b-c_9"),
        ("abc", "abc"),
        ("x" * 32,) * 2,
    ],
)
def test_usernames_are_normalised_to_lower_case(raw: str, stored: str) -> None:
    assert normalize_username(raw) == stored


@pytest.mark.parametrize(
    "raw",
    ["ab", "x" * 33, "al ice", "alice@x", "ålice", "\u212aelvin", "alice\n", "", "al/ice"],
)
def test_bad_usernames_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"must|may contain"):
        normalize_username(raw)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("alice@example.com", "alice@example.com"),
        ("Alice.Smith+shop@Example.CO.uk", "alice.smith+shop@example.co.uk"),
        ("a@b-c.io", "a@b-c.io"),
    ],
)
def test_emails_are_normalised_to_lower_case(raw: str, stored: str) -> None:
    assert normalize_email(raw) == stored


@pytest.mark.parametrize(
    "raw",
    [
        "no-at-sign",
        "a@b",
        "a@@b.com",
        "a@b.c",
        " a@b.com",
        "a@b.com\n",
        ".a@b.com",
        "a..b@b.com",
        "a@-b.com",
        "x" * 65 + "@b.com",
        "a@" + "b" * 250 + ".com",
        "ä@b.com",
    ],
)
def test_bad_emails_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="valid email"):
        normalize_email(raw)


def test_password_length_rules() -> None:
    assert check_password("x" * 8) == "x" * 8
    assert check_password("é" * 128) == "é" * 128  # characters, not bytes
    for bad in ("x" * 7, "x" * 129, ""):
        with pytest.raises(ValueError, match="8 to 128"):
            check_password(bad)


# --- password KDF -------------------------------------------------------------


def test_default_hash_is_scrypt_with_owasp_parameters_and_a_random_salt() -> None:
    first = hash_password("correct horse")
    second = hash_password("correct horse")
    scheme, n, r, p, salt, key = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", "32768", "8", "3")
    assert len(base64.urlsafe_b64decode(salt + "==")) == 16
    assert len(base64.urlsafe_b64decode(key + "=")) == 32
    assert first != second  # a fresh salt each time
    assert "correct horse" not in first
    assert verify_password("correct horse", first)
    assert verify_password("correct horse", second)
    assert not verify_password("correct horsE", first)


def test_parameters_travel_with_the_hash() -> None:
    weak = hash_password("pass-word", FAST)
    assert weak.startswith("scrypt$1024$8$1$")
    assert verify_password("pass-word", weak)  # verified with its own parameters
    assert not verify_password("pass-wore", weak)


def test_tampered_or_malformed_hashes_never_verify() -> None:
    good = hash_password("pass-word", FAST)
    _scheme, n, r, p, salt, key = good.split("$")
    flipped = key[:-2] + ("A" if key[-2] != "A" else "B") + key[-1]
    for bad in [
        "",
        "pass-word",
        f"bcrypt${n}${r}${p}${salt}${key}",
        f"scrypt${n}${r}${p}${salt}",
        f"scrypt${n}${r}${p}${salt}${flipped}",
        f"scrypt$1000${r}${p}${salt}${key}",  # n not a power of two
        f"scrypt${2**30}${r}${p}${salt}${key}",  # would need 1 TiB: refused, not tried
        f"scrypt${n}$0${p}${salt}${key}",
        f"scrypt${n}${r}${p}$${key}",
        f"scrypt${n}${r}${p}${salt}$!!!",
        f"scrypt$x${r}${p}${salt}${key}",
    ]:
        assert not verify_password("pass-word", bad), bad


def test_scrypt_parameters_are_bounded() -> None:
    for kwargs in [{"n": 1000}, {"n": 2**21}, {"r": 0}, {"p": 17}, {"salt_bytes": 4}]:
        with pytest.raises(ValueError, match="scrypt"):
            ScryptParams(**kwargs)


# --- access tokens ------------------------------------------------------------


def _raw(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": access_tokens.ISSUER,
        "sub": "user-1",
        "preferred_username": "alice",
        "jti": str(uuid.uuid4()),
        "iat": int(NOW.timestamp()) - 10,
        "exp": int(NOW.timestamp()) + 600,
    }
    for name, value in overrides.items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    return claims


def _craft(key: SigningKey = KEY, kid: str | None = None, **overrides: Any) -> str:
    """A token signed by ``key``, naming ``kid`` (by default the key's own)."""
    return jwt.encode(
        _claims(**overrides), key.private, algorithm="EdDSA", headers={"kid": kid or key.kid}
    )


def _hs256_with_public_key(key: SigningKey) -> str:
    """The algorithm-confusion forgery: HMAC keyed with the (public) verification key."""
    public = key.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{_b64url({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}.{_b64url(_claims())}"
    )
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _b64url(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _refusal(codec: TokenCodec, token: str, now: dt.datetime = NOW) -> str:
    with pytest.raises(UserError) as caught:
        codec.verify(token, now)
    assert caught.value.kind is ErrorKind.UNAUTHENTICATED
    return caught.value.reason


def test_issued_token_carries_the_required_claims_and_verifies() -> None:
    codec = TokenCodec([KEY], ttl_seconds=900)
    issued = codec.issue(USER, NOW.replace(microsecond=123456))
    assert jwt.get_unverified_header(issued.token) == {"alg": "EdDSA", "typ": "JWT", "kid": KEY.kid}
    claims = _raw(issued.token)
    assert claims == {
        "iss": "checkout-saga-user",
        "sub": "user-1",
        "preferred_username": "alice",
        "jti": issued.jti,
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 900,
    }
    assert uuid.UUID(issued.jti).version == 4
    assert issued.expires_at == NOW + dt.timedelta(seconds=900)
    assert issued.expires_in(NOW) == 900
    verified = codec.verify(issued.token, NOW + dt.timedelta(seconds=899))
    assert (verified.user_id, verified.jti, verified.expires_at) == (
        "user-1",
        issued.jti,
        issued.expires_at,
    )
    assert (verified.username, verified.remaining_seconds(NOW + dt.timedelta(seconds=899))) == (
        "alice",
        # a revocation outlives the leeway too, by a verifier's clock running behind
        1 + EXPIRY_LEEWAY.seconds + CLOCK_SKEW.seconds,
    )
    assert codec.issue(USER, NOW).jti != issued.jti


def test_a_token_expires_at_exp_plus_the_leeway() -> None:
    codec = TokenCodec([KEY], ttl_seconds=60)
    issued = codec.issue(USER, NOW)
    end = issued.expires_at + EXPIRY_LEEWAY
    assert codec.verify(issued.token, end - dt.timedelta(microseconds=1))
    assert _refusal(codec, issued.token, end) == TokenFailure.EXPIRED
    assert _refusal(codec, issued.token, end + dt.timedelta(days=1)) == "TOKEN_EXPIRED"


def test_the_first_key_signs_and_the_others_still_verify() -> None:
    old = TokenCodec([OTHER_KEY], 60).issue(USER, NOW).token
    rotated = TokenCodec([KEY, OTHER_KEY], 60)
    issued = rotated.issue(USER, NOW)
    assert jwt.get_unverified_header(issued.token)["kid"] == KEY.kid == rotated.signing_kid
    assert rotated.verify(old, NOW).user_id == rotated.verify(issued.token, NOW).user_id
    assert set(rotated.public_keys()) == {KEY.kid, OTHER_KEY.kid}
    assert _refusal(TokenCodec([KEY], 60), old) == TokenFailure.INVALID  # old key dropped


def test_forged_tokens_are_invalid_even_when_also_expired() -> None:
    codec = TokenCodec([KEY], ttl_seconds=60)
    genuine = codec.issue(USER, NOW).token
    header, payload, signature = genuine.split(".")
    other_sig = "A" * len(signature) if not signature.startswith("A") else "B" * len(signature)
    past = int(NOW.timestamp()) - 100
    cases = {
        "other key": _craft(OTHER_KEY),
        "other key naming ours": _craft(OTHER_KEY, kid=KEY.kid),
        "other key, expired": _craft(OTHER_KEY, kid=KEY.kid, iat=past - 60, exp=past),
        "no kid": jwt.encode(_claims(), KEY.private, algorithm="EdDSA"),
        "tampered signature": f"{header}.{payload}.{other_sig}",
        "tampered payload": f"{header}.{_craft().split('.')[1]}.{signature}",
        "alg none": f"{_b64url({'alg': 'none', 'typ': 'JWT', 'kid': KEY.kid})}.{payload}.",
        "HS256 keyed with our public key": _hs256_with_public_key(KEY),
        "garbage": "not-a-jwt",
        "empty": "",
        "too long": "a" * 5000,
        "wrong issuer": _craft(iss="someone-else"),
    }
    for name, token in cases.items():
        assert _refusal(codec, token) == TokenFailure.INVALID, name


@pytest.mark.parametrize(
    "overrides",
    [
        {"sub": None},
        {"preferred_username": None},
        {"preferred_username": ""},
        {"jti": None},
        {"iat": None},
        {"exp": None},
        {"iss": None},
        {"sub": 42},
        {"sub": ""},
        {"jti": ""},
        {"iat": True},
        {"exp": "tomorrow"},
        {"exp": 1.5e12},
        {"iat": int(NOW.timestamp()) + 3600},  # issued in the future
        {"exp": int(NOW.timestamp()) - 20},  # expires before it was issued
    ],
)
def test_tokens_missing_or_with_bad_claims_are_invalid(overrides: dict[str, Any]) -> None:
    assert _refusal(TokenCodec([KEY], 60), _craft(**overrides)) == TokenFailure.INVALID


def test_small_clock_skew_between_replicas_is_tolerated() -> None:
    token = _craft(iat=int(NOW.timestamp()) + 20)
    assert TokenCodec([KEY], 60).verify(token, NOW).user_id == "user-1"


# --- use cases on in-memory ports --------------------------------------------


class MemoryStore:
    def __init__(self) -> None:
        self.rows: dict[str, NewUser] = {}

    def _user(self, new: NewUser) -> User:
        return User(id=new.id, username=new.username, email=new.email, created_at=NOW)

    async def insert(self, new: NewUser) -> User:
        if any(r.username == new.username for r in self.rows.values()):
            raise domain.username_taken()
        if any(r.email == new.email for r in self.rows.values()):
            raise domain.email_taken()
        self.rows[new.id] = new
        return self._user(new)

    async def get(self, user_id: str) -> User | None:
        row = self.rows.get(user_id)
        return None if row is None else self._user(row)

    async def credentials_by_username(self, username: str) -> StoredCredentials | None:
        for row in self.rows.values():
            if row.username == username:
                return StoredCredentials(self._user(row), row.password_hash)
        return None

    async def credentials_by_email(self, email: str) -> StoredCredentials | None:
        for row in self.rows.values():
            if row.email == email:
                return StoredCredentials(self._user(row), row.password_hash)
        return None


class MemoryRevocations:
    def __init__(self) -> None:
        self.revoked: dict[str, int] = {}

    async def revoke(self, jti: str, ttl_seconds: int) -> None:
        self.revoked[jti] = ttl_seconds

    async def is_revoked(self, jti: str) -> bool:
        return jti in self.revoked


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def revocations() -> MemoryRevocations:
    return MemoryRevocations()


@pytest.fixture
def accounts(clock: Clock, revocations: MemoryRevocations) -> Accounts:
    return Accounts(MemoryStore(), revocations, TokenCodec([KEY], 600), scrypt=FAST, clock=clock)


async def _refused(call: Any) -> UserError:
    with pytest.raises(UserError) as caught:
        await call
    return caught.value


async def test_register_normalises_and_refuses_duplicates_by_case(accounts: Accounts) -> None:
    user = await accounts.register("Alice", "Alice@Example.com", "s3cret-pass")
    assert (user.username, user.email) == ("alice", "alice@example.com")
    assert uuid.UUID(user.id)
    dup_name = await _refused(accounts.register("ALICE", "other@example.com", "s3cret-pass"))
    dup_mail = await _refused(accounts.register("bob", "ALICE@example.COM", "s3cret-pass"))
    assert (dup_name.kind, dup_name.reason) == (ErrorKind.CONFLICT, "USERNAME_TAKEN")
    assert (dup_mail.kind, dup_mail.reason) == (ErrorKind.CONFLICT, "EMAIL_TAKEN")
    bad = await _refused(accounts.register("bob", "bob@example.com", "short"))
    assert (bad.kind, bad.field) == (ErrorKind.INVALID, "password")


async def test_unknown_user_and_wrong_password_fail_alike_and_both_run_the_kdf(
    accounts: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    await accounts.register("alice", "alice@example.com", "s3cret-pass")
    kdf_runs: list[str] = []
    real_verify = domain.verify_password

    def counting_verify(password: str, encoded: str) -> bool:
        kdf_runs.append(encoded)
        return real_verify(password, encoded)

    monkeypatch.setattr(domain, "verify_password", counting_verify)
    wrong = await _refused(accounts.login("wrong-pass", username="alice"))
    unknown = await _refused(accounts.login("s3cret-pass", username="nobody"))
    unknown_mail = await _refused(accounts.login("s3cret-pass", email="nobody@example.com"))
    assert len(kdf_runs) == 3  # a dummy verification for each unknown account
    assert {(e.kind, e.reason, e.message) for e in (wrong, unknown, unknown_mail)} == {
        (ErrorKind.UNAUTHENTICATED, "INVALID_CREDENTIALS", "invalid username, email or password")
    }
    issued = await accounts.login("s3cret-pass", email="ALICE@example.com")
    assert issued.expires_at == NOW + dt.timedelta(seconds=600)


async def test_logout_revokes_until_expiry_and_revoked_tokens_are_refused(
    accounts: Accounts, clock: Clock, revocations: MemoryRevocations
) -> None:
    user = await accounts.register("alice", "alice@example.com", "s3cret-pass")
    issued = await accounts.login("s3cret-pass", username="alice")
    assert (await accounts.authenticate(issued.token)).user == user
    clock.now = NOW + dt.timedelta(seconds=100, milliseconds=500)
    await accounts.logout(issued.token)
    # rounded up, never shorter than the token is accepted anywhere
    assert revocations.revoked == {issued.jti: 500 + EXPIRY_LEEWAY.seconds + CLOCK_SKEW.seconds}
    refused = await _refused(accounts.authenticate(issued.token))
    assert refused.reason == TokenFailure.REVOKED
    again = await _refused(accounts.logout(issued.token))
    assert again.reason == TokenFailure.REVOKED
    other = await accounts.login("s3cret-pass", username="alice")
    clock.now = other.expires_at + EXPIRY_LEEWAY
    expired = await _refused(accounts.logout(other.token))
    assert expired.reason == TokenFailure.EXPIRED
    assert other.jti not in revocations.revoked


async def test_a_valid_token_of_a_vanished_user_is_invalid(accounts: Accounts) -> None:
    ghost = User(id="no-such-user", username="ghost", email="g@example.com", created_at=NOW)
    token = TokenCodec([KEY], 600).issue(ghost, NOW).token
    assert (await _refused(accounts.authenticate(token))).reason == TokenFailure.INVALID


async def test_get_user(accounts: Accounts) -> None:
    user = await accounts.register("alice", "alice@example.com", "s3cret-pass")
    assert await accounts.get_user(user.id) == user
    missing = await _refused(accounts.get_user("nope"))
    assert (missing.kind, missing.reason, missing.metadata) == (
        ErrorKind.NOT_FOUND,
        "USER_NOT_FOUND",
        {"user_id": "nope"},
    )
    empty = await _refused(accounts.get_user(""))
    assert (empty.kind, empty.field) == (ErrorKind.INVALID, "id")
