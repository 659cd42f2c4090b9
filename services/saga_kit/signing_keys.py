"""The User service's public token keys, as a REST API holds them.

Fetched with ``ListSigningKeys`` at start, again when a token names a key not held
(a rotation: the User service signs with a new key), and in the background once
they are older than ``max_age`` (so a key the User service dropped is dropped here
too). Tokens naming an unknown key trigger at most one successful fetch per
``min_interval`` seconds, shared by every request waiting for it, and at most one
attempt per ``retry_after`` seconds while the User service fails (the others are
answered unavailable at once), so forged kids cannot turn into a flood of calls.
Keys once fetched keep serving while the User service is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from checkout.user.v1 import user_pb2, user_pb2_grpc
from saga_kit.access_tokens import ALGORITHM, load_public_key

log = logging.getLogger(__name__)


class KeysUnavailable(grpc.aio.AioRpcError):
    """The keys were just asked for and the User service did not answer: answered like
    the User service being down (503, retry) without asking it again."""

    def __init__(self) -> None:
        empty = grpc.aio.Metadata()
        super().__init__(
            grpc.StatusCode.UNAVAILABLE,
            empty,
            empty,
            details="the token keys are unavailable (the User service did not answer)",
        )


class PublishedKeys:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout: float = 3.0,
        min_interval: float = 10.0,
        retry_after: float = 1.0,
        max_age: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = user_pb2_grpc.UserServiceStub(channel)
        self._timeout = timeout
        self._min_interval = min_interval
        self._retry_after = retry_after
        self._max_age = max_age
        self._clock = clock
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at = -float("inf")  # last successful fetch
        self._tried_at = -float("inf")  # last attempt, successful or not
        self._failed_at = -float("inf")  # last failed attempt
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self.fetches = 0  # attempts, for tests and metrics

    @property
    def keys(self) -> dict[str, Ed25519PublicKey]:
        return self._keys

    async def fetch(self) -> None:
        """Ask the User service now; its errors (AioRpcError) propagate."""
        async with self._lock:
            await self._fetch()

    async def _fetch(self) -> None:
        self.fetches += 1
        self._tried_at = self._clock()
        try:
            reply = await self._stub.ListSigningKeys(
                user_pb2.ListSigningKeysRequest(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError:
            self._failed_at = self._clock()
            raise
        keys = {}
        for key in reply.keys:
            if key.algorithm != ALGORITHM:
                log.warning("signing key %s has algorithm %r; ignored", key.kid, key.algorithm)
                continue
            try:
                keys[key.kid] = load_public_key(key.public_key_pem)
            except ValueError as exc:
                log.warning("signing key %s ignored: %s", key.kid, exc)
        self._keys = keys
        self._fetched_at = self._clock()

    async def get(self, kid: str) -> Ed25519PublicKey | None:
        """The key ``kid``, fetching the keys first if it is not held and none were
        fetched within ``min_interval``; None when the User service does not know it.

        AioRpcError when a fetch was needed and the User service did not answer."""
        if self._keys and self._clock() - self._fetched_at > self._max_age:
            self._refresh_in_background()
        key = self._keys.get(kid)
        if key is not None or not kid:
            return key
        async with self._lock:
            # Whoever held the lock may have fetched what this request needs.
            # Only a successful fetch counts: with none recent the User service is asked
            # (and its being down is an outage, 503), never a valid token refused.
            if kid not in self._keys and self._clock() - self._fetched_at >= self._min_interval:
                if self._clock() - self._failed_at < self._retry_after:
                    raise KeysUnavailable()
                await self._fetch()
        return self._keys.get(kid)

    async def ready(self) -> bool:
        """Whether keys are held, asking the User service first when none are (at most
        once per ``retry_after``): a readiness probe, so a REST API that cannot verify
        any token yet takes no traffic."""
        if self._keys:
            return True
        async with self._lock:
            if not self._keys and self._clock() - self._tried_at >= self._retry_after:
                try:
                    await self._fetch()
                except grpc.aio.AioRpcError as exc:
                    log.warning("no token keys yet: %s", exc.details())
        return bool(self._keys)

    def _refresh_in_background(self) -> None:
        if self._background is not None and not self._background.done():
            return
        if self._clock() - self._tried_at < self._min_interval:
            return
        self._background = asyncio.create_task(self.fetch_or_warn())

    async def fetch_or_warn(self) -> None:
        try:
            await self.fetch()
        except grpc.aio.AioRpcError as exc:
            log.warning("cannot refresh the token keys (keeping %d): %s", len(self._keys), exc)
