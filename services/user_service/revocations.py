"""Revoked access tokens, in Redis.

Logging out revokes the token's ``jti`` under ``user:revoked:<jti>`` (the key is
shared with the REST APIs, which read it: :func:`saga_kit.access_tokens.revoked_key`)
with a TTL equal to the token's remaining lifetime: after that the token is refused
as expired anyway, so the list never grows beyond the tokens still alive, and every
replica of every service sees a logout at once.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from saga_kit.access_tokens import revoked_key


class RedisRevocations:
    """:class:`user_service.domain.RevocationList` on Redis."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def revoke(self, jti: str, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            return  # already expired: nothing left to revoke
        await self._redis.set(revoked_key(jti), b"1", ex=ttl_seconds)

    async def is_revoked(self, jti: str) -> bool:
        return bool(await self._redis.exists(revoked_key(jti)))

    async def ping(self) -> None:
        await self._redis.ping()
