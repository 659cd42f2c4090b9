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
import math
import os
import random
import time

import asyncpg
import httpx
import pytest

from saga_devenv.config import DevConfig
from tests.chaos.faults import Faults
from tests.chaos.ledger import audit, gather, judge
from tests.chaos.notifications import Notifications
from tests.chaos.report import Run, render
from tests.chaos.seeding import seeded
from tests.chaos.shoppers import KINDS, SAGAS_PER_BUYER, Shop
from tests.conftest import Platform
from tests.e2e.conftest import System
from tests.helpers.waiting import budget

SPREAD = 30.0  # the sagas start over this many seconds
CHAOS_SECONDS = 70.0  # faults go on this long (the buyers finish after it if they must)
CONVERGE_WITHIN = budget(120.0)  # after the last fault (scaled with the suite's patience)
# The faults' few minutes, then at most the convergence budget.
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300 + int(CONVERGE_WITHIN))]
AUDIT_SETTLE = 10.0  # the audit runs once the suite's own checks held this long


def chaos_seed() -> int:
    given = os.environ.get("CHAOS_SEED")
    return int(given) if given else random.SystemRandom().randrange(1, 10**9)


async def test_every_saga_converges_and_the_ledger_balances_under_faults(
    chaos_platform: DevConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Run(chaos_seed())
    with capsys.disabled():
        print(f"\nchaos seed {run.seed} (CHAOS_SEED={run.seed} replays its choices)")
    try:
        await chaos_run(chaos_platform, run)
    finally:
        with capsys.disabled():
            print(render(run))
    if run.converged_in is None:
        pytest.fail(
            f"not converged within {CONVERGE_WITHIN:.0f}s after the last fault; "
            f"{len(run.found)} mismatches:\n" + "\n".join(run.found),
            pytrace=False,
        )


async def chaos_run(cfg: DevConfig, run: Run) -> None:
    system = System(Platform(cfg))
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    stage = time.monotonic()

    def lap(name: str) -> None:
        nonlocal stage
        run.timings[name] = time.monotonic() - stage
        stage = time.monotonic()

    async with httpx.AsyncClient(timeout=20, limits=limits) as http:
        notifications = Notifications(system.listener, http, seeded(run.seed, "notifications"))
        shop = await Shop.open(system, http, notifications, run.seed)
        buyers = await shop.buyers(math.ceil(sum(KINDS.values()) / SAGAS_PER_BUYER))
        run.sagas = shop.plan(buyers, SPREAD)
        run.faults = faults = Faults(cfg, run.seed)
        run.notifications = notifications
        lap("set-up")
        stop = asyncio.Event()
        loops = [faults.supervise, notifications.replay]
        if os.environ.get("CHAOS_FAULTS") != "0":  # 0: a calm baseline, to tell bugs apart
            loops += [faults.app_kills, faults.server_faults, faults.kills_after_status_writes]
        chaos = [asyncio.create_task(loop(stop)) for loop in loops]
        buyers_done = asyncio.gather(*(shop.run(saga) for saga in run.sagas))
        try:
            await asyncio.sleep(CHAOS_SECONDS)
        finally:
            stop.set()
            broken = [r for r in await asyncio.gather(*chaos, return_exceptions=True) if r]
            await faults.heal()
            faults.write_timeline(cfg.run_dir / "faults.log")
            lap("faults")
        assert not broken, f"a fault loop failed: {broken!r}"
        await buyers_done
        await notifications.replay_all()
        lap("buyers finish, notifications replayed")
        await converge(cfg, system, http, shop, run)
        lap("convergence")


async def converge(
    cfg: DevConfig, system: System, http: httpx.AsyncClient, shop: Shop, run: Run
) -> None:
    """Check until nothing is wrong (``run.converged_in`` set), or until
    ``CONVERGE_WITHIN`` passed; ``run.found`` holds what was wrong last.

    The suite's own checks first; once they have held for ``AUDIT_SETTLE`` seconds,
    ``saga-devenv audit`` with that grace, so it judges every ending there is."""
    calm = time.monotonic()
    clean_since: float | None = None
    while True:
        try:
            run.facts = await gather(cfg, system, http, run.sagas)
            run.found = judge(run.sagas, shop.products, run.facts)
        except (AssertionError, OSError, asyncpg.PostgresError, httpx.HTTPError) as exc:
            run.found = [f"could not gather the facts: {exc!r}"]
        run.progress.append((time.monotonic() - calm, len(run.found)))
        if run.found:
            clean_since = None
        else:
            clean_since = clean_since or time.monotonic()
            if time.monotonic() - clean_since >= AUDIT_SETTLE:
                verdict = await audit(cfg, AUDIT_SETTLE)
                run.found, run.audit_warnings = verdict.mismatches, verdict.warnings
                run.audit_checked = verdict.checked
                if not run.found:
                    run.converged_in = time.monotonic() - calm
                    return
        if time.monotonic() - calm > CONVERGE_WITHIN:
            if clean_since is None:  # the audit's view too, to help tell what went wrong
                verdict = await audit(cfg, AUDIT_SETTLE)
                run.found += verdict.mismatches
                run.audit_warnings, run.audit_checked = verdict.warnings, verdict.checked
            return
        await asyncio.sleep(3.0)
