"""Fill the ``default`` namespace with ended Checkouts, as an hour of a busy shop leaves
them waiting for their TTL delete: each one made over the REST API and ended by its saga
(paid through the Midtrans sandbox, or cancelled by its buyer through the API), with
its journal rows, as the bench's closed loop does.

    flock /tmp/e2e.lock .venv/bin/python -m benchmarks.seed_ended --ended 17000

Counts what the namespace already holds (ended, not yet deleted) and makes only the
rest; prints the count before and after. ``--cancel-every K``: every K-th checkout is
cancelled instead of paid (4: a quarter; 0: all paid). See docs/performance.md,
"Session 7".
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter

import httpx
from kubernetes_asyncio import config as kube_config

from benchmarks.saga_phases import WAIT, link_of
from benchmarks.saga_phases import Bench as _Bench
from benchmarks.saga_probes import ApiserverMetrics
from benchmarks.saga_shop import Accounts, Shop, Watcher, finished, pay_checkout, settled
from saga_devenv.config import DevConfig


def ended_now(watcher: Watcher) -> int:
    return sum(seen.finished and seen.phase != "Deleted" for seen in watcher.seen.values())


async def seed(bench: _Bench, target: int, buyers: int, cancel_every: int) -> Counter[str]:
    made: Counter[str] = Counter()
    turn = 0
    began = time.monotonic()

    async def buyer() -> None:
        nonlocal turn
        while ended_now(bench.watcher) < target:
            turn += 1
            cancel = cancel_every > 0 and turn % cancel_every == 0
            account = bench.accounts.take()
            product = bench.products[turn % len(bench.products)]
            answer = await bench.shop.checkout(account, product)
            if answer.status in (429, 503):
                await asyncio.sleep(min(max(answer.retry_after, 0.2), 5.0))
                continue
            cid, link = await link_of(bench, answer, time.monotonic())
            if cid is None or link is None:
                made["failed"] += 1
                continue
            if cancel:
                await bench.shop.cancel(account, cid)
                done = await bench.watcher.wait(cid, finished, WAIT)
            else:
                await pay_checkout(bench.shop, bench.watcher, cid, WAIT)
                done = await bench.watcher.wait(cid, settled, WAIT)
            made[done.phase if done is not None and done.phase else "unfinished"] += 1
            if sum(made.values()) % 1000 == 0:
                rate = sum(made.values()) / (time.monotonic() - began)
                print(
                    f"  {dict(made)}; ended in the namespace: "
                    f"{ended_now(bench.watcher)}; {rate:.1f}/s",
                    flush=True,
                )

    await asyncio.gather(*(buyer() for _ in range(buyers)))
    return made


async def run(options: argparse.Namespace) -> None:
    cfg = DevConfig.from_env()
    kube = await kube_config.new_client_from_config(config_file=str(cfg.kubeconfig))
    watcher = Watcher(kube)
    metrics = ApiserverMetrics(cfg)
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        accounts = Accounts(cfg, http)
        await accounts.ensure(1 + max(options.buyers * 4, 100))
        await watcher.start()
        try:
            shop = Shop(http)
            bench = _Bench(cfg, accounts, shop, watcher, metrics, kube, accounts.owner)
            bench.products = [
                await shop.product(accounts.owner, stock=1_000_000) for _ in range(10)
            ]
            print(f"ended Checkouts in the namespace: {ended_now(watcher)}", flush=True)
            began = time.monotonic()
            made = await seed(bench, options.ended, options.buyers, options.cancel_every)
            seconds = time.monotonic() - began
            phases = Counter(s.phase for s in watcher.seen.values() if s.phase != "Deleted")
            print(f"made {dict(made)} in {seconds:.0f} s; the namespace now: {dict(phases)}")
            for product in bench.products:
                await shop.delete_product(accounts.owner, product)
        finally:
            await watcher.stop()
            await metrics.close()
            await kube.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ended", type=int, default=17_000, help="ended Checkouts wanted")
    parser.add_argument("--buyers", type=int, default=16, help="concurrent buyers")
    parser.add_argument("--cancel-every", type=int, default=4)
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
