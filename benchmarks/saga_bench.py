"""Checkout saga benchmark: every figure of issue 12's table from one run, black-box.

Drives the system ``scripts/up`` runs (it must be up) through its own doors: the REST
checkout API, the sandbox's customer control, the apiserver. Prints one table (the
figures and the machine's load) and, with ``--json``, writes every raw number for
``benchmarks/plot_latency.py``. See docs/performance.md for what each figure means.

    scripts/up
    flock /tmp/e2e.lock .venv/bin/python -m benchmarks.saga_bench [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from kubernetes_asyncio import config as kube_config

from benchmarks import saga_phases as phases
from benchmarks.saga_probes import SYSTEM, ApiserverMetrics, loadavg, pid_of, rss_mib
from benchmarks.saga_shop import Accounts, Shop, Watcher, cancel_all, open_ones
from saga_devenv.config import DevConfig

QUICK = {
    "paid": 30,
    "raw": 100,
    "duration": 3.0,
    "flash_buyers": 100,
    "flash_units": 10,
    "late_buyers": 5,
    "live": 50,
    "live_window": 10.0,
    "idle": 3.0,
}
PHASES = ("closed", "raw", "latency", "flash", "live")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _per(count: Counter[str], by: int) -> str:
    total = sum(count.values())
    detail = ", ".join(f"{k} {v / by:.2f}" for k, v in sorted(count.items()))
    return f"{total / by:.2f} ({detail})" if by else "-"


@dataclasses.dataclass
class Results:
    started: str
    cpus: int
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    users_seconds: float = 0.0
    rss_idle_mib: float = 0.0
    # Checkouts in the namespace when the run began, by phase: ended ones waiting for
    # their TTL delete cost the operator and the apiserver (docs/performance.md, session 7).
    namespace_at_start: Counter[str] = dataclasses.field(default_factory=Counter)
    idle: phases.Rates | None = None
    closed: phases.ClosedLoop | None = None
    raw: phases.Raw | None = None
    open_loop: list[phases.OpenLoop] = dataclasses.field(default_factory=list)
    flash: phases.FlashSale | None = None
    live: phases.Live | None = None
    seconds: float = 0.0
    bench_cpu: float = 0.0  # the bench's own CPU seconds (it shares the machine)

    def rows(self) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        if (closed := self.closed) is not None and closed.paid:
            writes = Counter(
                {k: v for k, v in closed.checkout_writes.items() if not k.startswith("delete")}
            )
            deletes = sum(v for k, v in closed.checkout_writes.items() if k.startswith("delete"))
            rows.append(
                (
                    "Checkout writes per paid checkout (create..Settled)",
                    f"{_per(writes, closed.paid)}; TTL deletes seen: {deletes}",
                )
            )
            rows.append(("Event writes per paid checkout", _per(closed.event_writes, closed.paid)))
            rows.append(self._gets(closed))
            rows.append(self._cpu(closed))
            rows.append(
                (
                    f"closed loop, {closed.buyers} buyers: POST -> pay -> Settled",
                    f"{closed.paid} paid in {closed.seconds:.1f} s = "
                    f"{closed.paid / closed.seconds:.1f}/s; cycle p50 "
                    f"{_ms(phases.percentile(closed.cycle, 50))} p99 "
                    f"{_ms(phases.percentile(closed.cycle, 99))}; failed {closed.failed}; "
                    f"429/503 retried {dict(closed.refused) or 0}",
                )
            )
        for run in self.open_loop:
            rows.append(self._latency(run))
        if (raw := self.raw) is not None:
            rate = raw.objects / raw.seconds
            text = (
                f"{raw.objects} objects in {raw.seconds:.1f} s = {rate:.1f}/s; "
                f"apiserver+etcd {_cpu_ms(raw.cpu, raw.objects, 'apiserver', 'etcd')} ms/object"
            )
            if closed is not None and closed.paid:
                paid_rate = closed.paid / closed.seconds
                text = f"{paid_rate:.1f}/s vs raw {text}; ratio {paid_rate / rate:.2f}"
            rows.append(("paid checkouts/s vs raw apiserver (create + 2 status patches)", text))
        if (flash := self.flash) is not None:
            rows.append(self._flash(flash))
        rows.append(self._rss())
        if (live := self.live) is not None:
            rows.append(
                (
                    f"Midtrans status calls with {live.live} live",
                    f"{live.status_calls_ours / live.window:.1f}/s for ours, "
                    f"{live.status_calls_all / live.window:.1f}/s in all, over {live.window:.0f} s",
                )
            )
            rows.append(
                (
                    "drain (cancel through the API until ended)",
                    f"{live.live} live in {live.drain_seconds:.1f} s"
                    + "".join(
                        f"; {r.rate:g}/s run's in {r.drain_seconds:.1f} s" for r in self.open_loop
                    ),
                )
            )
        if self.namespace_at_start:
            rows.append(
                (
                    "Checkouts in the namespace at the start",
                    f"{sum(self.namespace_at_start.values())}: "
                    + ", ".join(f"{k} {v}" for k, v in self.namespace_at_start.most_common()),
                )
            )
        rows.append(
            (
                "machine",
                f"{self.cpus} CPUs; loadavg at start {_load(self.load_start)}, at end "
                f"{_load(self.load_end)}; bench {self.seconds:.0f} s, its own CPU "
                f"{self.bench_cpu:.0f} s (accounts ready in {self.users_seconds:.0f} s)",
            )
        )
        return rows

    def _gets(self, closed: phases.ClosedLoop) -> tuple[str, str]:
        created = closed.paid + closed.failed
        background = (self.idle.gets * closed.seconds) if self.idle else 0.0
        others = closed.creates_anyone - created
        return (
            "apiserver GETs of Checkouts per created checkout",
            f"{(closed.gets - background) / created:.2f} "
            f"({closed.gets} GETs during the closed loop, {background:.0f} expected from the "
            f"idle rate, {created} created by the bench, {max(others, 0)} by others meanwhile)",
        )

    def _cpu(self, closed: phases.ClosedLoop) -> tuple[str, str]:
        """CPU per paid checkout, minus what each process spends idle over as long."""
        rates = self.idle.cpu if self.idle else {}
        net = {
            k: max(v - rates.get(k, 0.0) * closed.seconds, 0.0) / closed.paid
            for k, v in closed.cpu.items()
        }
        total = sum(v for k, v in net.items() if k in SYSTEM)
        raw_total = sum(v for k, v in closed.cpu.items() if k in SYSTEM) / closed.paid
        parts = ", ".join(
            f"{k} {v * 1000:.1f}"
            for k, v in sorted(net.items(), key=lambda kv: -kv[1])
            if k in SYSTEM
        )
        return (
            "CPU per paid checkout, the system's own processes",
            f"{total * 1000:.0f} ms ({parts}); without subtracting idle: {raw_total * 1000:.0f} "
            f"ms; Midtrans sandbox apart: {net['Midtrans sandbox'] * 1000:.1f} ms",
        )

    @staticmethod
    def _latency(run: phases.OpenLoop) -> tuple[str, str]:
        s = phases.spread(run.link)
        answered = ", ".join(f"{k} {v}" for k, v in sorted(run.outcomes.items()))
        refusal = phases.spread(run.refusals)
        return (
            f"POST -> Snap token, {run.rate:g}/s open loop for {run.seconds:g} s",
            f"p50 {_ms(s['p50'])} p90 {_ms(s['p90'])} p99 {_ms(s['p99'])} max {_ms(s['max'])}; "
            f"{run.sent} sent: {answered}"
            + (f"; refusals p99 {_ms(refusal['p99'])}" if run.refusals else ""),
        )

    @staticmethod
    def _flash(flash: phases.FlashSale) -> tuple[str, str]:
        late = phases.spread(flash.late)
        return (
            f"flash sale: {flash.buyers} buyers, {flash.units} units",
            f"{flash.winners} winners, {flash.refused} refused, {flash.unanswered} unanswered; "
            f"every buyer answered after {flash.all_answered:.1f} s, p99 answer "
            f"{_ms(phases.percentile(flash.answers, 99))}; {flash.created} Checkouts created; "
            f"{flash.retries} 429/503 retried; a buyer after the sell-out refused in p50 "
            f"{_ms(late['p50'])} max {_ms(late['max'])} ({flash.late_refused}/{len(flash.late)} "
            f"refused, {flash.late_created} Checkouts created)",
        )

    def _rss(self) -> tuple[str, str]:
        text = f"{self.rss_idle_mib:.0f} MiB idle (at start)"
        if self.live is not None:
            text += (
                f", {self.live.rss_mib:.0f} MiB at {self.live.live} live AwaitingPayment "
                f"(created in {self.live.create_seconds:.0f} s)"
            )
        return ("operator RSS", text)

    def table(self) -> str:
        lines = ["| measure | this run |", "| --- | --- |"]
        lines += [f"| {name} | {value} |" for name, value in self.rows()]
        return "\n".join(lines)


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def _cpu_ms(cpu: dict[str, float], per: int, *names: str) -> str:
    return f"{sum(cpu[n] for n in names) * 1000 / per:.1f}"


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="a smoke run of a minute or two (small numbers)")
    add("--phases", default=",".join(PHASES), help=f"which to run, of {','.join(PHASES)}")
    add("--buyers", type=int, default=8, help="concurrent buyers in the closed loop, and raw")
    add("--paid", type=int, default=200, help="paid checkouts in the closed loop")
    add("--raw", type=int, default=600, help="Checkouts the raw apiserver client writes")
    add("--rates", default="5,20,50", help="open-loop arrival rates, per second")
    add("--duration", type=float, default=30.0, help="seconds of each open-loop rate")
    add("--flash-buyers", type=int, default=1000)
    add("--flash-units", type=int, default=100)
    add("--late-buyers", type=int, default=20, help="buyers arriving after the sell-out")
    add("--live", type=int, default=1000, help="live AwaitingPayment checkouts for RSS/polling")
    add("--live-window", type=float, default=30.0, help="seconds Midtrans calls are counted")
    add(
        "--open-per-user",
        type=int,
        default=5,
        help="the API's CHECKOUT_API_MAX_OPEN_PER_USER: the live phase uses live/this buyers",
    )
    add("--idle", type=float, default=10.0, help="seconds of idle measurement (background)")
    add("--json", type=Path, help="write every number here (for plot_latency.py)")
    options = parser.parse_args(argv)
    if options.quick:
        for key, value in QUICK.items():
            if parser.get_default(key) == getattr(options, key):
                setattr(options, key, value)
    return options


async def _tidy(shop: Shop, watcher: Watcher, accounts: Accounts) -> None:
    """What a run cut short left: open checkouts of the bench's buyers, its products."""
    leftovers = list(open_ones(watcher, accounts))
    if leftovers:
        print(f"cancelling {len(leftovers)} checkouts left open by an earlier run", flush=True)
        await cancel_all(shop, watcher, leftovers, phases.DRAIN)
    for product in await shop.products_of(accounts.owner):
        await shop.delete_product(accounts.owner, product)


async def run(options: argparse.Namespace) -> Results:
    cfg = DevConfig.from_env()
    try:
        for name in [*SYSTEM.values(), "midtrans-sandbox"]:
            pid_of(cfg, name)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"the local system is not running ({exc}): run scripts/up") from exc
    wanted = set(options.phases.split(","))
    began, cpu_began = time.monotonic(), time.process_time()
    results = Results(time.strftime("%Y-%m-%d %H:%M:%S %Z"), os.cpu_count() or 0, loadavg())
    os.environ.setdefault("KUBECONFIG", str(cfg.kubeconfig))
    # The benchmark keeps kubernetes_asyncio (its models); the apps use saga_kit.apiserver.
    kube = await kube_config.new_client_from_config(config_file=str(cfg.kubeconfig))
    limits = httpx.Limits(max_connections=4000, max_keepalive_connections=200)
    metrics = ApiserverMetrics(cfg)
    watcher = Watcher(kube)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        accounts = Accounts(cfg, http)
        shop = Shop(http)
        live_buyers = -(-options.live // max(1, options.open_per_user))
        pool = 1 + max(options.flash_buyers + options.late_buyers, live_buyers, 100)
        print(f"accounts: {pool} buyers (kept in {cfg.run_dir / 'bench'})", flush=True)
        results.users_seconds = await accounts.ensure(pool)
        await watcher.start()
        results.namespace_at_start = Counter(
            seen.phase or "Pending" for seen in watcher.seen.values()
        )
        try:
            await _tidy(shop, watcher, accounts)
            bench = phases.Bench(cfg, accounts, shop, watcher, metrics, kube, accounts.owner)
            bench.products = [
                await shop.product(accounts.owner, stock=1_000_000) for _ in range(10)
            ]
            results.rss_idle_mib = rss_mib(pid_of(cfg, SYSTEM["operator"]))
            if "closed" in wanted:
                print(f"idle {options.idle:g} s, then the closed loop", flush=True)
                results.idle = await phases.idle(bench, options.idle)
                results.closed = await phases.closed_loop(bench, options.buyers, options.paid)
            if "raw" in wanted:
                print("raw apiserver", flush=True)
                results.raw = await phases.raw(bench, options.buyers, options.raw)
            if "latency" in wanted:
                for rate in (float(r) for r in options.rates.split(",")):
                    print(f"open loop {rate:g}/s for {options.duration:g} s", flush=True)
                    results.open_loop.append(await phases.open_loop(bench, rate, options.duration))
            if "flash" in wanted:
                print(f"flash sale {options.flash_buyers}/{options.flash_units}", flush=True)
                results.flash = await phases.flash_sale(
                    bench, options.flash_buyers, options.flash_units, options.late_buyers
                )
            if "live" in wanted:
                print(f"{options.live} live checkouts", flush=True)
                results.live = await phases.live(bench, options.live, options.live_window)
        finally:
            with contextlib.suppress(Exception):  # best effort: the next run tidies too
                await _tidy(shop, watcher, accounts)
            await watcher.stop()
            await metrics.close()
            await kube.close()
    results.load_end = loadavg()
    results.seconds = time.monotonic() - began
    results.bench_cpu = time.process_time() - cpu_began
    return results


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    options = _options(argv)
    results = asyncio.run(run(options))
    print()
    print(results.table())
    if options.json is not None:
        document = {
            "options": vars(options) | {"json": str(options.json)},
            "results": _jsonable(results),
            "table": results.rows(),
            "open_loop": [
                {"rate": r.rate, **phases.spread(r.link), "outcomes": dict(r.outcomes)}
                for r in results.open_loop
            ],
        }
        options.json.write_text(json.dumps(document, indent=1))
        print(f"\nwrote {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
