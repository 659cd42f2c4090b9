"""Scale-out on one machine: paid checkouts per second with more API and Product
replicas, and with a second operator shard, against the system ``scripts/up`` runs.

Extra replicas are extra processes started here, each with the environment of the
running app it copies (read from ``/proc/<pid>/environ``), changing only its ports and
the addresses of the replicas it should call. A shard is one more release in its own
Kubernetes namespace: operator, expiry worker, webhook listener, Product service and
REST API of its own, with its own journal and product schemas, NATS streams
(``EVENTS_NAMESPACE``), Lease, expiry queue and Midtrans notification URL; it shares
the servers, the User service and the Midtrans sandbox. Everything started here is
stopped again, also on Ctrl-C or an error. See docs/scale-out.md for what the figures
mean on a 2-core machine.

    scripts/up
    flock /tmp/e2e.lock .venv/bin/python -m benchmarks.scale_out [--paid 300] [--buyers 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes_asyncio import client
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client.exceptions import ApiException

from benchmarks.saga_probes import SYSTEM, cpu_seconds, loadavg, pid_of
from benchmarks.saga_shop import (
    PREFIX,
    Account,
    Accounts,
    Answer,
    Shop,
    Watcher,
    finished,
    has_link,
    open_ones,
    pay_checkout,
    settled,
)
from saga_devenv.apps import NOTIFICATIONS_PATH, url
from saga_devenv.config import DevConfig

WAIT = 60.0  # longest a buyer waits for one answer or one change
READY = 90.0  # longest a started process may take to answer its readiness probe
PRICE = 1000

# The variables that hold an app's own ports (devenv/saga_devenv/apps.py), by pid file.
PORT_VARIABLES: dict[str, tuple[str, ...]] = {
    "checkout-api": ("CHECKOUT_API_PORT",),
    "product-service": ("PRODUCT_HTTP_PORT", "PRODUCT_GRPC_PORT"),
    "user-service": ("USER_HTTP_PORT", "USER_GRPC_PORT"),
    "payment-listener": ("LISTENER_PORT",),
    "checkout-operator": ("CHECKOUT_METRICS_PORT",),
    "expiry-worker": (),
}
READY_PATH = {"checkout-operator": "/readyz", "expiry-worker": ""}  # others: /readyz too


# --- pure: environments and spreading ------------------------------------------------


def parse_environ(raw: bytes) -> dict[str, str]:
    """``/proc/<pid>/environ``: NUL-separated ``NAME=value`` entries."""
    pairs = (entry.decode().partition("=") for entry in raw.split(b"\0") if entry)
    return {name: value for name, _, value in pairs}


def replica_env(app: str, base: Mapping[str, str], ports: Sequence[int]) -> dict[str, str]:
    """``base`` (a running ``app``'s environment) with its own ports replaced, in the
    order of :data:`PORT_VARIABLES`; nothing else changes."""
    names = PORT_VARIABLES[app]
    if len(ports) != len(names):
        raise ValueError(f"{app} needs {len(names)} ports ({', '.join(names)}), got {len(ports)}")
    missing = [n for n in names if n not in base]
    if missing:
        raise ValueError(f"the running {app} has no {', '.join(missing)}: not its environment?")
    return {**base, **{n: str(p) for n, p in zip(names, ports, strict=True)}}


@dataclass(frozen=True)
class Shard:
    """A second release on the same servers: what must differ from the first."""

    namespace: str  # Kubernetes namespace of its Checkouts (and its Lease)
    product_grpc: int  # its Product service's gRPC port
    listener_port: int  # its webhook listener

    @property
    def key(self) -> str:  # schema names and NATS names take [a-z0-9_] only
        return self.namespace.replace("-", "_")

    def settings(self, app: str) -> dict[str, str]:
        """The variables ``app`` of this shard sets on top of the first release's."""
        journal = {"CHECKOUT_DB_SCHEMA": f"{self.key}_checkouts"}
        events = {"EVENTS_NAMESPACE": self.key}
        product = {"CHECKOUT_PRODUCT_SERVICE": f"127.0.0.1:{self.product_grpc}"}
        operator = {
            **journal,
            **events,
            **product,
            "CHECKOUT_NAMESPACE": self.namespace,
            "CHECKOUT_LEASE_NAMESPACE": self.namespace,
            "CHECKOUT_LEASE_NAME": f"checkout-operator-{self.namespace}",
            "CHECKOUT_EXPIRY_QUEUE": f"arq:queue:{self.namespace}",
            # Midtrans notifies the URL given with the payment page: this shard's listener.
            "MIDTRANS_NOTIFICATION_URL": url(self.listener_port, NOTIFICATIONS_PATH),
        }
        return {
            "checkout-operator": operator,
            "expiry-worker": operator,
            "checkout-api": {**journal, **product, "CHECKOUT_API_NAMESPACE": self.namespace},
            "payment-listener": {**events, "CHECKOUT_NAMESPACE": self.namespace},
            "product-service": {**events, "PRODUCT_DB_SCHEMA": f"{self.key}_products"},
        }[app]


@dataclass(frozen=True)
class Door:
    """Where a buyer checks out: one REST API, and the namespace it creates Checkouts in."""

    api: str  # base URL, http://127.0.0.1:<port>/api/v1
    namespace: str


def doors_for(buyers: int, doors: Sequence[Door]) -> list[Door]:
    """Buyer ``i`` always uses ``doors[i % len(doors)]``: each door gets an equal share
    of the closed loop's buyers (a client-side round robin, as a Service would spread
    connections)."""
    if not doors:
        raise ValueError("no API to send buyers to")
    return [doors[i % len(doors)] for i in range(buyers)]


def accounts_of(accounts: Sequence[Account], door: int, doors: int) -> Sequence[Account]:
    """The buyers who shop at door ``door`` of ``doors``: every ``doors``-th, so each
    buyer uses one API only, as a Service would keep a client on one replica."""
    if not 0 <= door < doors:
        raise ValueError(f"door {door} of {doors}")
    return accounts[door::doors]


def shares_of(
    home: Sequence[Account], away: Sequence[Account], doors: Sequence[Door]
) -> list[Sequence[Account]]:
    """Each door's buyers: doors in ``default`` split ``home``, the others ``away``.

    A shard's buyers never shop in the first release, in any run: releases that share
    Redis share the API's per-user record of the checkouts it created in the last 10
    minutes, and one release counts another's as open (its read model never learns
    them), so a buyer who had just shopped in ``default`` met 429 TooManyOpenCheckouts in
    the shard. A shop front end sends each buyer to one shard; so does the bench."""
    local = [d for d in doors if d.namespace == "default"]
    other = [d for d in doors if d.namespace != "default"]
    return [
        accounts_of(home, local.index(d), len(local))
        if d.namespace == "default"
        else accounts_of(away, other.index(d), len(other))
        for d in doors
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- processes -----------------------------------------------------------------------


@dataclass
class Started:
    label: str  # in the table
    app: str  # pid file name of the app it copies
    port: int  # readiness probe port, 0: none
    process: subprocess.Popen[bytes]
    log: Path


class Replicas:
    """The processes this bench started; :meth:`stop_all` ends each of them by its pid."""

    def __init__(self, cfg: DevConfig) -> None:
        self._cfg = cfg
        self.running: list[Started] = []

    def base(self, app: str) -> tuple[list[str], dict[str, str]]:
        """The running app's command line and environment."""
        proc = Path(f"/proc/{pid_of(self._cfg, app)}")
        argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        return argv, parse_environ((proc / "environ").read_bytes())

    def start(self, label: str, app: str, env: Mapping[str, str], port: int) -> Started:
        argv, _ = self.base(app)
        log = self._cfg.run_dir / "logs" / f"scale-out-{label.replace(' ', '-')}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the bench, which stops these
            )
        started = Started(label, app, port, process, log)
        self.running.append(started)
        return started

    async def ready(self, http: httpx.AsyncClient) -> None:
        """Wait until every started process answers its readiness probe."""
        deadline = time.monotonic() + READY
        for one in self.running:
            path = READY_PATH.get(one.app, "/readyz")
            while path:
                if one.process.poll() is not None:
                    raise RuntimeError(f"{one.label} exited ({one.process.returncode}); {one.log}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url(one.port, path), timeout=2)).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{one.label} not ready after {READY:g} s; see {one.log}")
                await asyncio.sleep(0.3)

    def stop_all(self) -> None:
        for one in reversed(self.running):
            if one.process.poll() is None:
                one.process.terminate()
        for one in reversed(self.running):
            try:
                one.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                one.process.kill()
                one.process.wait()
        self.running.clear()


# --- one configuration ---------------------------------------------------------------


@dataclass
class Result:
    name: str
    paid: int
    seconds: float
    posts: list[float]  # POST -> answer, seconds
    cycles: list[float]  # POST -> Settled, seconds
    failed: int
    refused: Counter[str]
    cpu: dict[str, float]  # label -> CPU seconds over the run
    load: tuple[float, float]  # 1-min loadavg at start and end
    bench_cpu: float = 0.0
    restarted: list[str] = field(default_factory=list)  # whose pid changed meanwhile


def percentile(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


class NamespaceWatcher(Watcher):
    """saga_shop's Watcher, on another namespace than ``default``."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        super().__init__(api)
        self._custom = _InNamespace(api, namespace)


class _InNamespace(client.CustomObjectsApi):
    """Lists (and watches) ``namespace`` whatever namespace the caller names."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        super().__init__(api)
        self._namespace = namespace

    def list_namespaced_custom_object(  # the watch reads the inherited docstring
        self, group: str, version: str, namespace: str, plural: str, **kwargs: Any
    ) -> Any:
        return super().list_namespaced_custom_object(
            group, version, self._namespace, plural, **kwargs
        )


@dataclass
class Loop:
    """The closed loop's shared state: products per namespace, watchers, counts."""

    http: httpx.AsyncClient
    shop: Shop
    accounts: Accounts
    products: dict[str, list[str]]  # namespace -> product ids its Product service lists
    watchers: dict[str, Watcher]
    posts: list[float] = field(default_factory=list)
    cycles: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    done: int = 0
    claimed: int = 0  # checkouts begun or done: the loop stops beginning at ``count``
    home: Sequence[Account] = ()  # buyers in the first release (``default``)
    away: Sequence[Account] = ()  # buyers in the shard, and never in ``default``

    def reset(self) -> None:
        self.posts, self.cycles, self.refused = [], [], Counter()
        self.failed = self.done = self.claimed = 0

    async def post(self, door: Door, buyer: Account) -> Answer:
        products = self.products[door.namespace]
        body = {
            "products": [
                {"id": products[self.done % len(products)], "price": PRICE, "quantity": 1}
            ],
            "payment_ttl_seconds": 900,
        }
        headers = {**buyer.auth, "Idempotency-Key": uuid.uuid4().hex}
        began = time.monotonic()
        try:
            reply = await self.http.post(
                f"{door.api}/checkouts", json=body, headers=headers, timeout=WAIT
            )
        except httpx.HTTPError:
            return Answer(0, time.monotonic() - began)
        try:
            parsed = reply.json()
        except ValueError:
            parsed = {}
        retry = float(reply.headers.get("retry-after", 0) or 0)
        return Answer(reply.status_code, time.monotonic() - began, parsed, retry)

    async def buyer(self, door: Door, buyers: Sequence[Account], count: int) -> None:
        watcher = self.watchers[door.namespace]
        while self.claimed < count:
            self.claimed += 1
            began = time.monotonic()
            answer = await self.post(door, buyers[self.claimed % len(buyers)])
            if answer.status in (429, 503):
                self.claimed -= 1  # refused before it began: try again
                self.refused[str(answer.status)] += 1
                await asyncio.sleep(min(max(answer.retry_after, 0.2), 5.0))
                continue
            cid = answer.checkout_id
            if answer.status not in (200, 201, 202) or cid is None:
                self.failed += 1
                continue
            self.posts.append(answer.seconds)
            if not answer.body.get("redirect_url"):
                seen = await watcher.wait(cid, has_link, WAIT)
                if seen is None or not seen.has_link:
                    self.failed += 1
                    continue
            try:
                paid = await pay_checkout(self.shop, watcher, cid, WAIT) == 200
            except httpx.HTTPError:
                paid = False
            if not paid or await watcher.wait(cid, settled, WAIT) is None:
                self.failed += 1
                continue
            self.done += 1
            self.cycles.append(time.monotonic() - began)

    async def run(self, doors: Sequence[Door], buyers: int, count: int) -> float:
        """``count`` checkouts by ``buyers`` at once; the seconds it took."""
        self.reset()
        began = time.monotonic()
        shares = shares_of(self.home, self.away, doors)
        await asyncio.gather(
            *(
                self.buyer(door, shares[doors.index(door)], count)
                for door in doors_for(buyers, doors)
            )
        )
        return time.monotonic() - began


async def tidy(loop: Loop, door: Door) -> None:
    """Cancel the bench's checkouts left open in the door's namespace (a run cut short
    leaves some; they count against their buyers' open-checkout limit)."""
    watcher = loop.watchers[door.namespace]
    left = list(open_ones(watcher, loop.accounts))
    for account, name in left:
        with contextlib.suppress(httpx.HTTPError):
            await loop.http.post(f"{door.api}/checkouts/{name}/cancel", headers=account.auth)
    if left:
        ended, _ = await watcher.wait_all([n for _, n in left], finished, WAIT)
        print(f"{door.namespace}: cancelled {ended} of {len(left)} left open", flush=True)


def cpu_of(pids: Mapping[str, int]) -> dict[str, float]:
    return {label: cpu_seconds(pid) for label, pid in pids.items()}


def restarted(before: Mapping[str, int], after: Mapping[str, int]) -> list[str]:
    """Processes whose pid changed (or that stopped) between two looks."""
    return [label for label, pid in before.items() if after.get(label) != pid]


async def measure(
    name: str, loop: Loop, doors: Sequence[Door], bench: Bench, options: Any
) -> Result:
    await loop.run(doors, options.buyers, options.warmup)  # first requests, connections
    load_start = loadavg()[0]
    pids = bench.pids()
    before, bench_before = cpu_of(pids), time.process_time()
    seconds = await loop.run(doors, options.buyers, options.paid)
    after = cpu_of(pids)
    return Result(
        name,
        loop.done,
        seconds,
        loop.posts,
        loop.cycles,
        loop.failed,
        loop.refused,
        {k: after[k] - before[k] for k in after},
        (load_start, loadavg()[0]),
        time.process_time() - bench_before,
        restarted(pids, bench.pids(missing_ok=True)),
    )


# --- the table -----------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def row(result: Result) -> str:
    busy = {k: v / result.seconds for k, v in result.cpu.items()}
    total = sum(busy.values())
    top = ", ".join(
        f"{k} {v:.2f}" for k, v in sorted(busy.items(), key=lambda kv: -kv[1]) if v >= 0.02
    )
    refused = ", ".join(f"{n} x {s}" for s, n in sorted(result.refused.items())) or "0"
    void = f" (VOID: {', '.join(result.restarted)} restarted meanwhile)" if result.restarted else ""
    return (
        f"| {result.name}{void} | {result.paid / result.seconds:.1f} "
        f"| {_ms(percentile(result.posts, 50))} / {_ms(percentile(result.posts, 99))} "
        f"| {_ms(percentile(result.cycles, 50))} / {_ms(percentile(result.cycles, 99))} "
        f"| {result.paid} ({result.failed} failed, {refused} retried) "
        f"| {total:.2f}: {top}; bench {result.bench_cpu / result.seconds:.2f} "
        f"| {result.load[0]:.2f} -> {result.load[1]:.2f} |"
    )


HEADER = (
    "| configuration | paid/s | POST (answered with the payment link) p50 / p99 ms "
    "| POST -> Settled p50 / p99 ms "
    "| paid (failed, 429/503 retried) | CPU, cores busy: all processes, then each "
    "| load (1 min) start -> end |\n| --- | --- | --- | --- | --- | --- | --- |"
)


# --- the run -------------------------------------------------------------------------


async def _product(http: httpx.AsyncClient, products_url: str, owner: Account) -> str:
    reply = await http.post(
        f"{products_url}/products",
        json={"name": f"{PREFIX}{uuid.uuid4().hex[:8]}", "price": PRICE, "stock": 1_000_000},
        headers=owner.auth,
    )
    reply.raise_for_status()
    return str(reply.json()["id"])


async def _ensure_namespace(kube: client.ApiClient, name: str) -> None:
    body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    try:
        await client.CoreV1Api(kube).create_namespace(body)
    except ApiException as exc:
        if exc.status != 409:
            raise


class Bench:
    def __init__(self, cfg: DevConfig, http: httpx.AsyncClient, kube: client.ApiClient) -> None:
        self.cfg, self.http, self.kube = cfg, http, kube
        self.replicas = Replicas(cfg)

    def api(self, label: str, product_grpc: int | None = None) -> Door:
        """One more API replica; with ``product_grpc``, calling that Product replica."""
        _, base = self.replicas.base("checkout-api")
        port = free_port()
        env = replica_env("checkout-api", base, [port])
        if product_grpc is not None:
            env["CHECKOUT_PRODUCT_SERVICE"] = f"127.0.0.1:{product_grpc}"
        self.replicas.start(label, "checkout-api", env, port)
        return Door(url(port, "/api/v1"), "default")

    def product(self, label: str, shard: Shard | None = None) -> tuple[int, int]:
        """One more Product service (HTTP, gRPC ports), in ``shard`` if given."""
        _, base = self.replicas.base("product-service")
        ports = (free_port(), shard.product_grpc if shard else free_port())
        env = replica_env("product-service", base, ports)
        if shard is not None:
            env.update(shard.settings("product-service"))
        self.replicas.start(label, "product-service", env, ports[0])
        return ports

    def shard(self, shard: Shard) -> tuple[Door, int]:
        """A whole second release in ``shard.namespace``: its API door and Product HTTP port."""
        product_http, _ = self.product(f"{shard.namespace} Product", shard)
        for app, label, ports in (
            ("checkout-operator", "operator", [free_port()]),
            ("expiry-worker", "expiry worker", []),
            ("payment-listener", "listener", [shard.listener_port]),
            ("checkout-api", "API", [free_port()]),
        ):
            _, base = self.replicas.base(app)
            env = {**replica_env(app, base, ports), **shard.settings(app)}
            self.replicas.start(f"{shard.namespace} {label}", app, env, ports[0] if ports else 0)
        api_port = self.replicas.running[-1].port
        return Door(url(api_port, "/api/v1"), shard.namespace), product_http

    def pids(self, missing_ok: bool = False) -> dict[str, int]:
        """Every process measured, as now recorded (someone may restart the system's)."""
        system: dict[str, int] = {}
        for label, name in {**SYSTEM, "sandbox": "midtrans-sandbox"}.items():
            try:
                system[label] = pid_of(self.cfg, name)
            except (OSError, ValueError):
                if not missing_ok:
                    raise SystemExit(f"{name} is not running: run scripts/up") from None
        return {**system, **{r.label: r.process.pid for r in self.replicas.running}}


CONFIGS = ("1 API", "2 API", "3 API", "2 API + 2 Product", "2 shards")


async def configuration(name: str, bench: Bench, loop: Loop, options: Any) -> Result:
    doors = [Door(url(bench.cfg.api_port, "/api/v1"), "default")]
    shard_products: tuple[str, list[str]] | None = None
    shard_door: Door | None = None
    try:
        if name in ("2 API", "3 API"):
            doors += [bench.api(f"API {i + 2}") for i in range(int(name[0]) - 1)]
        elif name == "2 API + 2 Product":
            _, grpc = bench.product("Product 2")
            doors.append(bench.api("API 2", product_grpc=grpc))
        elif name == "2 shards":
            shard = Shard(options.shard_namespace, free_port(), free_port())
            await _ensure_namespace(bench.kube, shard.namespace)
            shard_door, product_http = bench.shard(shard)
            doors.append(shard_door)
            await bench.replicas.ready(bench.http)
            owner = loop.accounts.owner
            products_url = url(product_http, "/api/v1")
            ids = [await _product(bench.http, products_url, owner) for _ in range(10)]
            shard_products = (products_url, ids)
            loop.products[shard.namespace] = ids
            loop.watchers[shard.namespace] = NamespaceWatcher(bench.kube, shard.namespace)
            await loop.watchers[shard.namespace].start()
            await tidy(loop, shard_door)
        await bench.replicas.ready(bench.http)
        print(f"{name}: {len(bench.replicas.running)} extra processes ready", flush=True)
        return await measure(name, loop, doors, bench, options)
    finally:
        if shard_door is not None and shard_door.namespace in loop.watchers:
            with contextlib.suppress(Exception):  # best effort: the next run tidies too
                await tidy(loop, shard_door)
        if shard_products is not None:
            products_url, ids = shard_products
            for product in ids:
                with contextlib.suppress(httpx.HTTPError):
                    await bench.http.delete(
                        f"{products_url}/products/{product}", headers=loop.accounts.owner.auth
                    )
        for namespace in [n for n in loop.watchers if n != "default"]:
            await loop.watchers.pop(namespace).stop()
        bench.replicas.stop_all()


async def run(options: argparse.Namespace) -> list[Result]:
    # A TERM (e.g. a timeout around flock) ends the run like Ctrl-C: replicas are stopped.
    this = asyncio.current_task()
    assert this is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
    cfg = DevConfig.from_env()
    kube = await kube_config.new_client_from_config(config_file=str(cfg.kubeconfig))
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=200)
    results: list[Result] = []
    async with httpx.AsyncClient(timeout=WAIT, limits=limits) as http:
        bench = Bench(cfg, http, kube)
        accounts = Accounts(cfg, http)
        await accounts.ensure(options.accounts + options.shard_accounts + 1)
        shop = Shop(http)
        watcher = Watcher(kube)
        await watcher.start()
        owner = accounts.owner
        products_url = url(cfg.product_http_port, "/api/v1")
        ids = [await _product(http, products_url, owner) for _ in range(10)]
        loop = Loop(http, shop, accounts, {"default": ids}, {"default": watcher})
        # The first account owns the products; the last ones shop in the shard only.
        loop.home = accounts.all[1 : -options.shard_accounts]
        loop.away = accounts.all[-options.shard_accounts :]
        default = Door(url(cfg.api_port, "/api/v1"), "default")
        try:
            await tidy(loop, default)
            for name in options.configs.split(","):
                results.append(await configuration(name, bench, loop, options))
                print(HEADER.splitlines()[0] + "\n" + row(results[-1]), flush=True)
        finally:
            bench.replicas.stop_all()
            for product in ids:
                await shop.delete_product(owner, product)
            await watcher.stop()
            await kube.close()
    return results


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--configs", default=",".join(CONFIGS), help=f"which, of {','.join(CONFIGS)}")
    add("--buyers", type=int, default=16, help="concurrent buyers (closed loop), spread evenly")
    add("--paid", type=int, default=300, help="paid checkouts measured per configuration")
    add("--warmup", type=int, default=32, help="paid checkouts before measuring, not counted")
    add("--accounts", type=int, default=400, help="buyers in default (the API limits per user)")
    add("--shard-accounts", type=int, default=300, help="buyers in the shard only (the last)")
    add("--shard-namespace", default="scale-out-b", help="the second shard's namespace")
    options = parser.parse_args(argv)
    if options.shard_accounts < 1 or options.accounts < 1:
        parser.error("--accounts and --shard-accounts must be at least 1")
    unknown = set(options.configs.split(",")) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configuration {', '.join(sorted(unknown))}; choose of {CONFIGS}")
    return options


def main(argv: list[str] | None = None) -> int:
    options = _options(argv)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load = "/".join(f"{v:.2f}" for v in loadavg())
    try:
        results = asyncio.run(run(options))
    except (KeyboardInterrupt, asyncio.CancelledError):  # run() stopped what it started
        print("interrupted", file=sys.stderr)
        return 130
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"\n{started} at {commit or '?'}, {os.cpu_count()} CPUs, {options.buyers} buyers, "
        f"{options.paid} paid each; loadavg {load} at start, "
        + "/".join(f"{v:.2f}" for v in loadavg())
        + " at end"
    )
    print(HEADER)
    print("\n".join(row(r) for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
