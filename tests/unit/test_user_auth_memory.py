"""Remembering accepted tokens for a few seconds, and nothing else."""

from __future__ import annotations

import pytest

from saga_kit.user_auth import AuthError, Identity, RememberingAuthenticator


class UserService:
    def __init__(self) -> None:
        self.calls = 0
        self.revoked: set[str] = set()
        self.expires_in = 900.0

    async def check(self, token: str) -> tuple[Identity, float]:
        self.calls += 1
        if token in self.revoked or token == "bad":
            raise AuthError("TOKEN_REVOKED", "revoked")
        return Identity(user_id=f"id-{token}", username=token), self.expires_in


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_accepted_token_is_asked_about_once_per_ttl_and_revocation_lands_after_it() -> (
    None
):
    users, clock = UserService(), Clock()
    auth = RememberingAuthenticator(users, ttl=5.0, clock=clock)
    for _ in range(20):
        assert (await auth.authenticate("ani")).user_id == "id-ani"
    assert users.calls == 1
    users.revoked.add("ani")  # logout
    clock.now += 4.9
    await auth.authenticate("ani")  # still within the few seconds
    clock.now += 0.2
    with pytest.raises(AuthError):
        await auth.authenticate("ani")
    assert users.calls == 2


async def test_refusals_are_never_remembered_and_tokens_near_expiry_not_past_it() -> None:
    users, clock = UserService(), Clock()
    auth = RememberingAuthenticator(users, ttl=5.0, clock=clock)
    for _ in range(3):
        with pytest.raises(AuthError):
            await auth.authenticate("bad")
    assert users.calls == 3
    users.expires_in = 1.0  # the token itself ends in a second
    await auth.authenticate("budi")
    clock.now += 1.5
    await auth.authenticate("budi")
    assert users.calls == 5


async def test_it_remembers_at_most_max_tokens() -> None:
    users = UserService()
    auth = RememberingAuthenticator(users, ttl=60.0, max_tokens=2)
    for token in ("a", "b", "c", "a"):
        await auth.authenticate(token)
    assert users.calls == 4  # "a" was dropped to make room for "c"
