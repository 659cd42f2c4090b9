"""One acting operator: leader election on a ``coordination.k8s.io/v1`` Lease.

Two operator instances (a node partition leaving the old Pod running, a local run
against a cluster) would both make payment pages, poll Midtrans, consume the payment
inbox and sweep. Only the Lease's holder does any of that. kopf's peering was not
used: it pauses kopf's handlers only, and this operator's reconciler, poller, inbox
and sweep run outside them.

The algorithm is client-go's, made small:

* **acquire**: create the Lease, or take it over when it has no holder or has
  expired. Every write carries the resourceVersion it was decided on
  (compare-and-swap), so of two candidates exactly one wins.
* **expiry is judged on the candidate's own clock**: a lease has expired when its
  record (resourceVersion) has not changed for ``leaseDurationSeconds`` since *this*
  process first saw it, so the clocks of different nodes never need to agree. A new
  process therefore waits a full lease duration before it takes over a lease whose
  holder vanished without releasing it (SIGKILL, partition).
* **renew** every ``renew_every`` seconds. The leader gives up when it could not
  renew within ``duration - renew_every`` of its last successful write (timed from
  before that write was sent): before any other candidate can see the lease expire.
  Giving up ends :meth:`LeaderElector.keep`; the caller stops acting at once.
* **release** on a clean shutdown, after acting has stopped: the holder is cleared,
  so a successor (a rolling update) takes over at its next try, not after expiry.

While acting, renewals run in a thread of their own, with their own event loop and
apiserver connection (:meth:`LeaderElector.keep_in_own_thread`), as client-go renews
from its own goroutine: nothing the operator's loop does can delay them. A restart that
reconciled 15,000 ended Checkouts kept that loop busy past the renew deadline, and the
operator gave up its lease and exited (a crash loop in a Pod).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from saga_kit.apiserver import ApiClient, ApiError

from . import metrics

log = logging.getLogger(__name__)

# What a failed call to the apiserver may raise (answers, connections, timeouts).
_TRANSIENT = (ApiError, aiohttp.ClientError, OSError, TimeoutError)

Lease = dict[str, Any]


def new_identity() -> str:
    """The Pod's name (its hostname in Kubernetes) plus a suffix unique to this process."""
    host = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{host}-{secrets.token_hex(4)}"


def micro_time(at: dt.datetime) -> str:
    """RFC 3339 with exactly six fractional digits, the form a Lease's MicroTime needs."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_is_free(holder: str | None, unchanged_for: float, duration: float) -> bool:
    """May a candidate take the lease? Yes if nobody holds it or it has expired.

    ``unchanged_for`` is how long the candidate has seen the same lease record (on its
    own monotonic clock); ``duration`` the lease's ``leaseDurationSeconds``.
    """
    return not holder or unchanged_for >= duration


class LeaderElector:
    """Acquire, keep and release one Lease for this process."""

    def __init__(
        self,
        api: ApiClient,
        namespace: str,
        name: str,
        *,
        identity: str | None = None,
        duration: float = 15.0,
        renew_every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < 2 * renew_every <= duration:
            raise ValueError(
                f"the lease must be renewed at least twice per duration "
                f"(renew every {renew_every}s, duration {duration}s)"
            )
        self._api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity or new_identity()
        self.duration = duration
        self.renew_every = renew_every
        self._clock = clock
        self.attempts = 0  # acquisition attempts made (refused ones included)
        self.renewals = 0
        self.leading = False
        self._renewed_at = 0.0  # when the last successful write was sent (monotonic)
        self._seen: tuple[str, float] | None = None  # (resourceVersion, first seen at)

    @property
    def renew_deadline(self) -> float:
        """Seconds after the last successful write by which a renewal must succeed."""
        return self.duration - self.renew_every

    @property
    def last_renewed(self) -> float:
        """When the last successful write of the lease was sent (monotonic clock)."""
        return self._renewed_at

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"

    # --- acquiring -------------------------------------------------------------------

    async def acquire(self, stop: asyncio.Event | None = None) -> bool:
        """Wait until this process leads (True) or ``stop`` is set first (False)."""
        waiting_logged = False
        while stop is None or not stop.is_set():
            try:
                async with asyncio.timeout(self.renew_every):
                    if await self.try_acquire():
                        return True
                if not waiting_logged:
                    log.info(
                        "waiting for lease %s (%s is not the leader)", self.where, self.identity
                    )
                    waiting_logged = True
            except _TRANSIENT as exc:
                log.warning("lease %s: could not try to acquire: %s", self.where, _brief(exc))
            await _sleep_unless(stop, self.renew_every / 2)
        return False

    async def try_acquire(self) -> bool:
        """One attempt: create the lease, or take it if free or already ours."""
        self.attempts += 1
        sent = self._clock()
        lease = await self._read()
        now = micro_time(dt.datetime.now(dt.UTC))
        if lease is None:
            return await self._write(None, sent, transitions=0, acquired=now)
        spec = lease.get("spec") or {}
        rv = lease["metadata"]["resourceVersion"]
        if self._seen is None or self._seen[0] != rv:
            self._seen = (rv, sent)
        holder = spec.get("holderIdentity")
        if holder == self.identity:  # ours already (we lost track of it): just renew
            return await self._write(
                lease,
                sent,
                transitions=spec.get("leaseTransitions") or 0,
                acquired=spec.get("acquireTime"),
            )
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        if not lease_is_free(holder, sent - self._seen[1], duration):
            return False
        transitions = (spec.get("leaseTransitions") or 0) + 1
        return await self._write(lease, sent, transitions=transitions, acquired=now)

    # --- keeping -----------------------------------------------------------------------

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew until ``stop`` (still leading: release after acting has stopped) or loss.

        When this returns and :attr:`leading` is False, the lease was lost: the caller
        must stop acting at once.
        """
        while self.leading and not stop.is_set():
            await _sleep_unless(stop, self._renewed_at + self.renew_every - self._clock())
            if stop.is_set():
                return
            left = self._renewed_at + self.renew_deadline - self._clock()
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    if not await self._renew_until_done(stop):
                        return
            except TimeoutError:
                self._lose(f"not renewed within {self.renew_deadline:g}s")
                return

    async def keep_in_own_thread(self, stop: asyncio.Event) -> None:
        """:meth:`keep`, run in a thread with its own event loop and apiserver client.

        Returns like :meth:`keep`: once ``stop`` is set and the renewals have stopped, or
        when the lease was lost (:attr:`leading` False).
        """
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="lease", daemon=True)
        thread.start()
        thread_stop = asyncio.Event()  # bound to the thread's loop by its first wait

        async def keep_there() -> None:
            caller_api, self._api = self._api, ApiClient(self._api.connection)
            try:
                await self.keep(thread_stop)
            finally:
                await self._api.close()
                self._api = caller_api  # release() runs in the caller's loop

        done = asyncio.run_coroutine_threadsafe(keep_there(), loop)
        kept: asyncio.Future[Any] = asyncio.wrap_future(done)
        kept.add_done_callback(lambda f: f.cancelled() or f.exception())  # read below
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({kept, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # stopped, lost, or cancelled: the renewals end before this returns
            stopping.cancel()
            loop.call_soon_threadsafe(thread_stop.set)
            await asyncio.to_thread(_wait_quietly, done)
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join)
            loop.close()
        done.result()  # an error of keep() is the caller's, as it would be in its loop

    async def _renew_until_done(self, stop: asyncio.Event) -> bool:
        """Renew, retrying transient failures; False when the lease is no longer ours."""
        while True:
            try:
                if await self.renew():
                    return True
                if not self.leading:
                    return False
            except _TRANSIENT as exc:
                log.warning("lease %s: renewal failed: %s", self.where, _brief(exc))
            await _sleep_unless(stop, min(1.0, self.renew_every / 5))
            if stop.is_set():
                return True

    async def renew(self) -> bool:
        """One renewal; False if it lost a race (retry) or the lease was taken (lost)."""
        sent = self._clock()
        lease = await self._read()
        spec = {} if lease is None else lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            self._lose(f"the lease is held by {spec.get('holderIdentity') or 'nobody'} now")
            return False
        renewed = await self._write(
            lease,
            sent,
            transitions=spec.get("leaseTransitions") or 0,
            acquired=spec.get("acquireTime"),
        )
        if renewed:
            self.renewals += 1
        return renewed

    # --- releasing ---------------------------------------------------------------------

    async def release(self) -> None:
        """Clear the holder (only if still ours), so a successor need not wait for expiry."""
        if not self.leading:
            return
        self._set_leading(False, "released")
        try:
            async with asyncio.timeout(self.renew_every):
                lease = await self._read()
                if lease is None or _holder(lease) != self.identity:
                    return
                body = self._body(lease, holder=None, duration=1, transitions=None, acquired=None)
                await self._send(body, create=False)
        except _TRANSIENT as exc:  # it then expires on its own
            log.warning("lease %s: could not release: %s", self.where, _brief(exc))

    # --- plumbing ----------------------------------------------------------------------

    @property
    def _leases(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    async def _read(self) -> Lease | None:
        try:
            return await self._api.request("GET", f"{self._leases}/{self.name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def _send(self, body: Lease, *, create: bool) -> None:
        if create:
            await self._api.send("POST", self._leases, body=body)
        else:
            await self._api.send("PUT", f"{self._leases}/{self.name}", body=body)

    async def _write(
        self, lease: Lease | None, sent: float, *, transitions: int, acquired: str | None
    ) -> bool:
        """Create (``lease`` None) or compare-and-swap the lease with us as holder."""
        body = self._body(
            lease,
            holder=self.identity,
            duration=math.ceil(self.duration),
            transitions=transitions,
            acquired=acquired,
        )
        try:
            await self._send(body, create=lease is None)
        except ApiError as exc:
            if exc.status in (404, 409):  # someone else wrote first (or deleted it)
                return False
            raise
        self._renewed_at = sent
        if not self.leading:
            self._set_leading(True, f"acquired (attempt {self.attempts})")
        return True

    def _body(
        self,
        lease: Lease | None,
        *,
        holder: str | None,
        duration: int,
        transitions: int | None,
        acquired: str | None,
    ) -> Lease:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if lease is not None:  # compare-and-swap on the version we decided on
            metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
            metadata["labels"] = lease["metadata"].get("labels")
        spec: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "renewTime": micro_time(dt.datetime.now(dt.UTC)),
        }
        if acquired is not None:
            spec["acquireTime"] = acquired
        if transitions is not None:
            spec["leaseTransitions"] = transitions
        elif lease is not None:
            spec["leaseTransitions"] = (lease.get("spec") or {}).get("leaseTransitions")
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {k: v for k, v in metadata.items() if v is not None},
            "spec": {k: v for k, v in spec.items() if v is not None},
        }

    def _lose(self, why: str) -> None:
        if self.leading:
            self._set_leading(False, f"lost: {why}")

    def _set_leading(self, leading: bool, why: str) -> None:
        self.leading = leading
        metrics.LEADER.set(1 if leading else 0)
        metrics.LEADER_TRANSITIONS.labels("leader" if leading else "follower").inc()
        level = logging.WARNING if why.startswith("lost") else logging.INFO
        log.log(
            level,
            "lease %s: %s %s leadership (%s)",
            self.where,
            self.identity,
            "took" if leading else "gave up",
            why,
        )


async def _sleep_unless(stop: asyncio.Event | None, seconds: float) -> None:
    if seconds <= 0:
        return
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _wait_quietly(done: concurrent.futures.Future[None]) -> None:
    """Block until ``done`` has an outcome, whatever it is."""
    concurrent.futures.wait([done])


def _holder(lease: Lease) -> str | None:
    holder = (lease.get("spec") or {}).get("holderIdentity")
    return holder if isinstance(holder, str) else None


def _brief(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
