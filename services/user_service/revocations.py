"""Revoked access tokens, in Redis.

Logging out revokes the token's ``jti`` under ``user:revoked:<jti>`` with a TTL
equal to the token's remaining lifetime: after that the token is refused as
expired anyway, so the list never grows beyond the tokens still alive, and every
replica of the service sees a logout at once.
"""

from __future__ import annotations

import redis.asyncio as aioredis

KEY_PREFIX = "user:revoked:"


class RedisRevocations:
    """:class:`user_service.domain.RevocationList` on Redis."""

    def __init__(self, redis: aioredis.Redis, prefix: str = KEY_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix

    def key(self, jti: str) -> str:
        return f"{self._prefix}{jti}"

    async def revoke(self, jti: str, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            return  # already expired: nothing left to revoke
        await self._redis.set(self.key(jti), b"1", ex=ttl_seconds)

    async def is_revoked(self, jti: str) -> bool:
        return bool(await self._redis.exists(self.key(jti)))

    async def ping(self) -> None:
        await self._redis.ping()
