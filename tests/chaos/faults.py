"""Faults injected into the private chaos system, at random but from a seeded RNG.

* apps: SIGKILL of the operator, the expiry worker, the Product service or the webhook
  listener; :meth:`Faults.supervise` starts them again, as a kubelet would
  (``saga_devenv.apps.start`` starts whatever is not running);
* just after a status write: a watch on the Checkouts (kubectl) kills the operator (and,
  for ``Expired``, the expiry worker) the moment a phase change shows, so some kills land
  between the status write and the read-model write that follows it;
* servers: NATS or Redis SIGKILLed and started again; Postgres refusing writes (the
  database turned read-only and every session cut, as a failover to a replica does) or
  frozen (SIGSTOP of all its processes, then SIGCONT).

Each loop draws from its own ``random.Random`` seeded from the run's seed, so a seed
replays the same choices (the timing of the system itself still varies). A server fault
holds :attr:`Faults.servers_down` until the server is back, and app restarts wait for
it, since an app's health check may need that server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from saga_devenv import apps, servers
from saga_devenv.config import DevConfig
from saga_devenv.process import Daemon, DaemonError
from tests.chaos.platform import start_apps
from tests.chaos.seeding import seeded

KILLABLE = ("checkout-operator", "expiry-worker", "product-service", "payment-listener")
# Phase changes after which the watch may kill the operator at once.
WATCHED_PHASES = frozenset({"AwaitingPayment", "Settled", "Expired", "Cancelled", "Rejected"})
DATABASE = servers.POSTGRES_DB


def _reap(pid: int) -> None:
    """Collect a killed child (the servers and apps are children of this process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


@dataclass
class Faults:
    cfg: DevConfig
    seed: int
    started: float = field(default_factory=time.monotonic)
    injected: Counter[str] = field(default_factory=Counter)
    timeline: list[str] = field(default_factory=list)
    servers_down: asyncio.Lock = field(default_factory=asyncio.Lock)
    failed_starts: list[str] = field(default_factory=list)
    postgres_frozen: bool = False

    def rng(self, loop: str) -> random.Random:
        return seeded(self.seed, loop)

    def note(self, kind: str, detail: str = "") -> None:
        self.injected[kind] += 1
        self.timeline.append(f"{time.monotonic() - self.started:7.2f}s {kind} {detail}".rstrip())

    # --- apps -------------------------------------------------------------------------

    def _app(self, name: str) -> Daemon:
        return next(d for d in apps.daemons(self.cfg) if d.name == name)

    def kill_app(self, name: str, kind: str) -> bool:
        pid = self._app(name).pid()
        if pid is None:  # already down (killed and not started yet)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)
        self.note(kind, f"{name} pid {pid}")
        return True

    async def start_apps(self) -> None:
        """Start every app that is down (after any server fault in progress)."""
        async with self.servers_down:
            await asyncio.to_thread(start_apps, self.cfg)

    async def supervise(self, stop: asyncio.Event) -> None:
        """What the kubelet does: start again every app that is not running. A start that
        fails (the app was killed again while starting, or exited on a fault) is retried."""
        while not await _stopped(stop, 0.5):
            if all(d.pid() is not None for d in apps.daemons(self.cfg)):
                continue
            try:
                await self.start_apps()
            except DaemonError as exc:
                self.failed_starts.append(str(exc))
                first = str(exc).splitlines()[0]
                self.timeline.append(f"{time.monotonic() - self.started:7.2f}s ({first})")

    async def app_kills(self, stop: asyncio.Event) -> None:
        rng = self.rng("apps")
        while not await _stopped(stop, rng.uniform(2.0, 6.0)):
            name = rng.choice(KILLABLE)
            self.kill_app(name, f"SIGKILL {name}")

    async def kills_after_status_writes(self, stop: asyncio.Event) -> None:
        """Kill the operator right after a Checkout's phase changed (seen by a watch)."""
        rng = self.rng("after-status-write")
        quiet_until = 0.0
        async for phase in self._phase_changes(stop):
            now = time.monotonic()
            if phase not in WATCHED_PHASES:
                continue
            # While Postgres is frozen, a status write is surely followed by a read-model
            # write that has not happened yet: the kill lands in between.
            if self.postgres_frozen and rng.random() < 0.8:
                when = f"after {phase}, Postgres frozen"
            elif now >= quiet_until and rng.random() < 0.3:
                quiet_until = now + rng.uniform(15.0, 25.0)
                when = f"after {phase}"
            else:
                continue
            for victim in ("checkout-operator", "expiry-worker"):
                if victim == "checkout-operator" or phase == "Expired":
                    self.kill_app(victim, f"SIGKILL {victim} {when}")

    async def _phase_changes(self, stop: asyncio.Event) -> AsyncIterator[str]:
        """Each new phase of a Checkout, as ``kubectl get --watch`` shows it, until stop."""
        kubectl = [
            str(self.cfg.binary("kubectl")),
            f"--kubeconfig={self.cfg.kubeconfig}",
            "--namespace=default",
            "get",
            "checkouts",
            "--watch",
            "--no-headers",
            "--output=custom-columns=NAME:.metadata.name,PHASE:.status.phase",
        ]
        phases: dict[str, str] = {}
        while not stop.is_set():
            watch = await asyncio.create_subprocess_exec(
                *kubectl, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
            )
            assert watch.stdout is not None
            try:
                while not stop.is_set():
                    try:
                        line = await asyncio.wait_for(watch.stdout.readline(), 1.0)
                    except TimeoutError:
                        continue
                    if not line:
                        break  # the watch ended (apiserver timeout): start another
                    name, _, phase = line.decode().strip().partition(" ")
                    if phases.get(name) != phase.strip():
                        phases[name] = phase.strip()
                        yield phases[name]
            finally:
                with contextlib.suppress(ProcessLookupError):
                    watch.kill()
                await watch.wait()

    # --- servers ----------------------------------------------------------------------

    async def restart_server(self, daemon: Daemon, downtime: float) -> None:
        pid = daemon.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
        self.note(f"restart {daemon.name}", f"SIGKILL pid {pid}, down {downtime:.1f}s")
        await asyncio.sleep(downtime)
        await _ensure(daemon)

    async def postgres_read_only(self, seconds: float) -> None:
        """The database refuses writes (new sessions read-only, every session cut)."""
        self.note("postgres read-only", f"{seconds:.1f}s")
        await self._set_read_only(True)
        try:
            await asyncio.sleep(seconds)
        finally:
            await self._set_read_only(False)

    async def _set_read_only(self, on: bool) -> None:
        conn = await asyncpg.connect(servers.postgres_dsn(self.cfg, "postgres"))
        try:
            if on:
                await conn.execute(
                    f"ALTER DATABASE {DATABASE} SET default_transaction_read_only = on"
                )
            else:
                await conn.execute(f"ALTER DATABASE {DATABASE} RESET default_transaction_read_only")
            # Sessions keep the setting they started with: cut them all, so they reconnect
            # with the new one.
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                DATABASE,
            )
        finally:
            await conn.close()

    async def postgres_freeze(self, seconds: float) -> None:
        pid = servers.postgres_daemon(self.cfg).pid()
        if pid is None:
            return
        self.note("postgres frozen", f"SIGSTOP {seconds:.1f}s")
        os.killpg(pid, signal.SIGSTOP)  # the postmaster leads the group of its backends
        self.postgres_frozen = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self.postgres_frozen = False
            os.killpg(pid, signal.SIGCONT)

    async def server_faults(self, stop: asyncio.Event) -> None:
        rng = self.rng("servers")
        faults: list[Callable[[], Awaitable[None]]] = [
            lambda: self.restart_server(servers.nats_daemon(self.cfg), rng.uniform(0.5, 3.0)),
            lambda: self.restart_server(servers.redis_daemon(self.cfg), rng.uniform(0.5, 3.0)),
            lambda: self.postgres_read_only(rng.uniform(2.0, 6.0)),
            lambda: self.postgres_freeze(rng.uniform(1.0, 4.0)),
        ]
        order = list(range(len(faults)))
        rng.shuffle(order)  # every kind comes once before any comes twice
        turn = 0
        while not await _stopped(stop, rng.uniform(3.0, 7.0)):
            fault = faults[order[turn % len(order)]]
            turn += 1
            async with self.servers_down:
                await fault()

    # --- the end ----------------------------------------------------------------------

    async def heal(self) -> None:
        """Everything up and healthy again: after the last fault, and whatever happened."""
        pid = servers.postgres_daemon(self.cfg).pid()
        if pid is not None:
            os.killpg(pid, signal.SIGCONT)
        await self._set_read_only(False)
        for daemon in servers.daemons(self.cfg):
            await _ensure(daemon)
        await self.start_apps()

    def write_timeline(self, path: Path) -> None:
        path.write_text("\n".join(self.timeline) + "\n")


async def _ensure(daemon: Daemon, tries: int = 3) -> None:
    """Start a server again (a port the killed one held may take a moment to free)."""
    for attempt in range(tries):
        try:
            await asyncio.to_thread(daemon.ensure)
            return
        except DaemonError:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(1.0)


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set; True if it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
