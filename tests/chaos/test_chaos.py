"""Issue 9's chaos run: nothing is lost under faults.

120 concurrent sagas of every kind (paid by bank transfer or card, paid late after
expiry, expired unpaid, cancelled, deleted with kubectl mid-flight) run through the REST
API while the operator, the expiry worker, the Product service and the webhook listener
are SIGKILLed at random (and right after status writes), NATS and Redis are restarted,
Postgres refuses writes or freezes, and genuine notifications are posted again,
duplicated, late and out of order. Afterwards, with no fault left, every saga must
converge within a bound and the ledger must balance (ledger.py). The run's seed is
printed; ``CHAOS_SEED=<seed>`` replays its choices.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
from collections import Counter

import httpx
import pytest

from saga_devenv.config import DevConfig
from tests.chaos.faults import Faults
from tests.chaos.ledger import gather, judge
from tests.chaos.notifications import Notifications
from tests.chaos.seeding import seeded
from tests.chaos.shoppers import KINDS, SAGAS_PER_BUYER, Saga, Shop
from tests.conftest import Platform
from tests.e2e.conftest import System

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

SPREAD = 30.0  # the sagas start over this many seconds
CHAOS_SECONDS = 70.0  # faults go on this long (the buyers finish after it if they must)
CONVERGE_WITHIN = 120.0  # after the last fault


def chaos_seed() -> int:
    given = os.environ.get("CHAOS_SEED")
    return int(given) if given else random.SystemRandom().randrange(1, 10**9)


async def test_every_saga_converges_and_the_ledger_balances_under_faults(
    chaos_platform: DevConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = chaos_seed()
    with capsys.disabled():
        print(f"\nchaos seed {seed} (CHAOS_SEED={seed} replays its choices)")
    system = System(Platform(chaos_platform))
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(timeout=20, limits=limits) as http:
        notifications = Notifications(system.listener, http, seeded(seed, "notifications"))
        shop = await Shop.open(system, http, notifications, seed)
        buyers = await shop.buyers(math.ceil(sum(KINDS.values()) / SAGAS_PER_BUYER))
        sagas = shop.plan(buyers, SPREAD)
        faults = Faults(chaos_platform, seed)
        stop = asyncio.Event()
        loops = (
            faults.supervise,
            faults.app_kills,
            faults.server_faults,
            faults.kills_after_status_writes,
            notifications.replay,
        )
        chaos = [asyncio.create_task(loop(stop)) for loop in loops]
        began = time.monotonic()
        buyers_done = asyncio.gather(*(shop.run(saga) for saga in sagas))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(buyers_done), CHAOS_SECONDS)
        finally:
            stop.set()
            broken = [r for r in await asyncio.gather(*chaos, return_exceptions=True) if r]
            await faults.heal()
            faults.write_timeline(chaos_platform.run_dir / "faults.log")
        assert not broken, f"a fault loop failed: {broken!r}"
        await buyers_done
        await notifications.replay_all()
        calm = time.monotonic()
        found = await converge(chaos_platform, system, http, shop, sagas)
        settled_in = time.monotonic() - calm
    report = render(seed, sagas, faults, notifications, found, settled_in, time.monotonic() - began)
    with capsys.disabled():
        print(report)
    assert not found, f"{len(found)} mismatches after the chaos run:\n" + "\n".join(found)


async def converge(
    cfg: DevConfig, system: System, http: httpx.AsyncClient, shop: Shop, sagas: list[Saga]
) -> list[str]:
    """Check until nothing is wrong, or ``CONVERGE_WITHIN`` passed: what is still wrong."""
    deadline = time.monotonic() + CONVERGE_WITHIN
    while True:
        found = judge(sagas, shop.products, await gather(cfg, system, http, sagas))
        if not found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(3.0)


def render(
    seed: int,
    sagas: list[Saga],
    faults: Faults,
    notifications: Notifications,
    found: list[str],
    settled_in: float,
    took: float,
) -> str:
    by_kind: dict[str, Counter[str]] = {}
    for saga in sagas:
        ending = saga.expected or (
            "deleted" if saga.deleted else saga.seen[-1] if saga.seen else ""
        )
        by_kind.setdefault(saga.kind, Counter())[ending] += 1
    lines = [f"chaos run, seed {seed}: {len(sagas)} sagas in {took:.0f}s"]
    lines.append("sagas by kind (ending the buyer's actions call for, or what it saw last):")
    for kind, endings in by_kind.items():
        detail = ", ".join(f"{ending} {n}" for ending, n in endings.most_common())
        lines.append(f"  {kind:10} {sum(endings.values()):4}  {detail}")
    lines.append(f"faults injected ({sum(faults.injected.values())}):")
    lines += [f"  {kind:45} {n}" for kind, n in sorted(faults.injected.items())]
    lines.append("notifications posted again:")
    lines += [f"  {kind:45} {n}" for kind, n in sorted(notifications.posted.items())]
    lines.append(
        f"NOT converged within {CONVERGE_WITHIN:.0f}s after the last fault"
        if found
        else f"converged {settled_in:.1f}s after the last fault"
    )
    lines.append(f"mismatches: {len(found)}")
    lines += [f"  {m}" for m in found]
    return "\n".join(lines)
