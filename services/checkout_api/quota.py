"""Enforcing the limits of :mod:`.limits` with Redis and the read model.

Rate limit: a token bucket per user in Redis, updated by one Lua script (atomic,
so concurrent POSTs on several API replicas all see the same bucket; time comes
from Redis, so replicas' clocks don't matter).

Open checkouts: the read model knows which checkouts of a user are open, but
only once the operator has registered them, which is a moment after the API
created them. So the API also keeps, in Redis, the names it created in the last
few minutes (``pending``) and counts those the read model doesn't know yet. Count
and create run under a Postgres advisory lock per user, so a burst of POSTs by
one user is serialized there and can never exceed the limit (replicas included;
the lock dies with its connection if the API crashes).

Redis down: POST fails closed (503 + Retry-After). Letting checkouts through
unlimited while Redis is down is exactly the hoarding this exists to stop; the
saga needs Redis (the expiry queue) anyway.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions

from . import store
from .limits import Limits, Refused, open_count, rate_limited, too_many_open

# Token bucket. KEYS[1]: the bucket; ARGV: size, refill per millisecond.
# Returns 0 when a token was taken, else the milliseconds until one is there.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local size = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or size
local at = tonumber(state[2]) or now
tokens = math.min(size, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(size / rate) + 1000)
return wait
"""

PENDING_FOR = dt.timedelta(minutes=10)  # the operator registers a checkout long before
LOCK_TIMEOUT = "5s"
# The first key of the two-key advisory lock: "open checkouts of user <hash>".
_LOCK_CLASS = zlib.crc32(b"checkout-api:open-checkouts") & 0x7FFFFFFF
UNAVAILABLE_RETRY_AFTER = 5


class Quota:
    """The API's limits on creating checkouts, enforced per user."""

    def __init__(
        self,
        limits: Limits,
        redis_client: aioredis.Redis,
        readmodel: Any,
        prefix: str = "checkout-api",
    ) -> None:
        self.limits = limits
        self._redis = redis_client
        self._readmodel = readmodel
        self._prefix = prefix
        self._take = redis_client.register_script(_TAKE)

    async def throttle(self, user_id: str) -> None:
        """Take one POST from the user's bucket, or :class:`Refused` (429)."""
        rate_per_ms = self.limits.posts_per_minute / 60_000
        with _redis_errors():
            wait = int(
                await self._take(
                    keys=[f"{self._prefix}:posts:{user_id}"],
                    args=[self.limits.post_burst, repr(rate_per_ms)],
                )
            )
        if wait > 0:
            raise rate_limited(wait, self.limits)

    @contextlib.asynccontextmanager
    async def open_slot(self, user_id: str, name: str) -> AsyncIterator[None]:
        """Room for checkout ``name``, held while the body creates it; else :class:`Refused`.

        A name the user already has (a retried POST with the same Idempotency-Key)
        needs no room. If the body fails, the room is given back.
        """
        key = f"{self._prefix}:pending:{user_id}"
        async with self._readmodel.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            try:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, user_id
                )
            except asyncpg.exceptions.LockNotAvailableError as exc:
                raise Refused(
                    503, "Busy", "too many checkouts at once; retry", UNAVAILABLE_RETRY_AFTER
                ) from exc
            pending = await self._pending(key)
            known, expiries = await store.open_checkouts(conn, user_id, [*pending, name])
            if name in known or name in pending:  # a retry: the create meets AlreadyExists
                yield
                return
            now = dt.datetime.now(dt.UTC)
            refusal = too_many_open(open_count(known, pending), self.limits, now, expiries)
            if refusal is not None:
                raise refusal
            with _redis_errors():  # one round trip while the lock is held
                pipe = self._redis.pipeline(transaction=False)
                pipe.zadd(key, {name: now.timestamp()})
                pipe.expire(key, PENDING_FOR)
                await pipe.execute()
            try:
                yield
            except BaseException:
                with contextlib.suppress(redis.exceptions.RedisError):
                    await self._redis.zrem(key, name)
                raise

    async def created_lately(self, user_id: str, name: str) -> bool:
        """Whether this API (any replica) created checkout ``name`` for the user in the
        last ``PENDING_FOR``: one Redis read. With the read model (which knows it from
        the operator's registration on) it tells whether a retried POST has a checkout
        without asking the apiserver, which a crowd refused at the sold-out gate made
        a GET each (a fifth of the API's CPU in a flash sale)."""
        with _redis_errors():
            at = await self._redis.zscore(f"{self._prefix}:pending:{user_id}", name)
        oldest = (dt.datetime.now(dt.UTC) - PENDING_FOR).timestamp()
        return at is not None and float(at) >= oldest

    async def _pending(self, key: str) -> list[str]:
        oldest = (dt.datetime.now(dt.UTC) - PENDING_FOR).timestamp()
        with _redis_errors():
            pipe = self._redis.pipeline(transaction=False)
            pipe.zremrangebyscore(key, "-inf", oldest)
            pipe.zrange(key, 0, -1)
            _, names = await pipe.execute()
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    """Redis unreachable: refuse (fail closed) with 503, the client retries later."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise Refused(
            503,
            "LimiterUnavailable",
            "checkout limits cannot be checked right now; retry later",
            UNAVAILABLE_RETRY_AFTER,
        ) from exc
