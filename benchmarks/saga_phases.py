"""The benchmark's phases, each against the running system, each cleaning up after itself.

* ``idle``: what the system costs doing nothing we asked (its pollers, sweeps, and
  whatever else shares the machine), subtracted from the closed loop.
* ``closed_loop``: K buyers each POST, pay and wait for Settled, N times in all.
* ``raw``: the apiserver alone doing the saga's three writes per Checkout.
* ``open_loop``: POSTs arriving on a fixed schedule whatever the answers.
* ``flash_sale``: B buyers at once for S units, then late buyers after the sell-out.
* ``live``: L checkouts left AwaitingPayment: the operator's memory, Midtrans polling.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from benchmarks.saga_probes import (
    SYSTEM,
    ApiserverMetrics,
    AuditCounts,
    CpuSnapshot,
    StatusCalls,
    pid_of,
    rss_mib,
)
from benchmarks.saga_shop import (
    NAMESPACE,
    Account,
    Accounts,
    Answer,
    Shop,
    Watcher,
    bounded,
    cancel_all,
    has_link,
    pay_checkout,
    settled,
)
from saga_devenv.config import DevConfig
from saga_kit.checkout_resource import API_VERSION, GROUP, KIND, PLURAL, VERSION

RAW_NAMESPACE = "saga-bench-raw"  # the local operator watches `default` only
WAIT = 60.0  # longest a buyer waits for one answer or one change
DRAIN = 300.0  # longest the bench waits for cancelled checkouts to end


@dataclass
class Bench:
    cfg: DevConfig
    accounts: Accounts
    shop: Shop
    watcher: Watcher
    metrics: ApiserverMetrics
    kube: client.ApiClient
    owner: Account
    products: list[str] = field(default_factory=list)

    @property
    def audit_log(self) -> Any:
        return self.cfg.run_dir / "logs" / "audit.log"


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(p * 10) - 1]


def spread(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


async def _backoff(answer: Answer) -> None:
    await asyncio.sleep(min(max(answer.retry_after, 0.2), 5.0))


async def link_of(bench: Bench, answer: Answer, began: float) -> tuple[str | None, float | None]:
    """The checkout and when (seconds after ``began``) the buyer had its payment link:
    with the POST's answer, or, after a 202, once the watch shows it."""
    cid = answer.checkout_id
    if cid is None or answer.status not in (200, 201, 202):
        return cid, None
    if answer.status != 202 and answer.body.get("redirect_url"):
        return cid, answer.seconds
    seen = await bench.watcher.wait(cid, has_link, WAIT)
    if seen is None or not seen.has_link:
        return cid, None
    return cid, time.monotonic() - began


# --- idle ----------------------------------------------------------------------------


@dataclass
class Rates:
    """Per second: CPU seconds by process, Checkout GETs and creates at the apiserver."""

    seconds: float
    cpu: dict[str, float]
    gets: float
    creates: float


async def idle(bench: Bench, seconds: float) -> Rates:
    before_cpu = CpuSnapshot.take(bench.cfg, time.monotonic())
    before = await bench.metrics.checkout_requests()
    await asyncio.sleep(seconds)
    after_cpu = CpuSnapshot.take(bench.cfg, time.monotonic())
    after = await bench.metrics.checkout_requests()
    span = after_cpu.at - before_cpu.at
    return Rates(
        span,
        {k: v / span for k, v in after_cpu.minus(before_cpu).items()},
        (after["GET"] - before["GET"]) / span,
        (after["POST ok"] - before["POST ok"]) / span,
    )


# --- closed loop ---------------------------------------------------------------------


@dataclass
class ClosedLoop:
    buyers: int
    paid: int
    failed: int
    refused: Counter[str]  # 429/503 answers, retried
    seconds: float
    cpu: dict[str, float]  # CPU seconds by process over the run
    checkout_writes: Counter[str]
    event_writes: Counter[str]
    gets: int  # Checkout GETs at the apiserver (anyone's) during the run
    creates_anyone: int  # Checkouts created at the apiserver (anyone's) during the run
    cycle: list[float]  # POST -> Settled, seconds


async def closed_loop(bench: Bench, buyers: int, count: int) -> ClosedLoop:
    audit = AuditCounts(bench.audit_log, NAMESPACE)
    before = await bench.metrics.checkout_requests()
    cpu_before = CpuSnapshot.take(bench.cfg, time.monotonic())
    names: list[str] = []
    cycles: list[float] = []
    refused: Counter[str] = Counter()
    failed = 0
    began = time.monotonic()

    async def buyer() -> None:
        nonlocal failed
        while len(names) + failed < count:
            start = time.monotonic()
            product = bench.products[len(names) % len(bench.products)]
            answer = await bench.shop.checkout(bench.accounts.take(), product)
            if answer.status in (429, 503):
                refused[str(answer.status)] += 1
                await _backoff(answer)
                continue
            cid, link = await link_of(bench, answer, start)
            if cid is None or link is None:
                failed += 1
                continue
            names.append(cid)
            if await pay_checkout(bench.shop, bench.watcher, cid, WAIT) != 200 or (
                await bench.watcher.wait(cid, settled, WAIT) is None
            ):
                failed += 1
                continue
            cycles.append(time.monotonic() - start)

    await asyncio.gather(*(buyer() for _ in range(buyers)))
    seconds = time.monotonic() - began
    checkout_writes, event_writes = await _settled_writes(audit, names)
    cpu_after = CpuSnapshot.take(bench.cfg, time.monotonic())
    after = await bench.metrics.checkout_requests()
    return ClosedLoop(
        buyers,
        len(cycles),
        failed,
        refused,
        seconds,
        cpu_after.minus(cpu_before),
        checkout_writes,
        event_writes,
        after["GET"] - before["GET"],
        after["POST ok"] - before["POST ok"],
        cycles,
    )


async def _settled_writes(
    audit: AuditCounts, names: list[str]
) -> tuple[Counter[str], Counter[str]]:
    """The writes to these checkouts once the audit log has stopped growing for them
    (the ending's Event is posted after the Settled write)."""
    last: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
    steady_since = time.monotonic()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = audit.writes(names)
        if now != last:
            last, steady_since = now, time.monotonic()
        elif time.monotonic() - steady_since >= 2.0:
            break
        await asyncio.sleep(0.5)
    return last


# --- the raw apiserver ---------------------------------------------------------------


@dataclass
class Raw:
    objects: int
    seconds: float
    cpu: dict[str, float]


def _conditions(now: str, paid: bool) -> list[dict[str, Any]]:
    def condition(kind: str, reason: str, message: str, status: str = "True") -> dict[str, Any]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
            "observedGeneration": 1,
        }

    found = [
        condition("Authorized", "UserAuthorized", "user raw exists"),
        condition("StockReserved", "StockReserved", "1 products reserved"),
        condition("PaymentReady", "SnapTokenIssued", "waiting for the buyer to pay"),
    ]
    if paid:
        found += [
            condition("Ready", "Settled", "payment settled"),
            condition("Paid", "Settled", "payment settled"),
        ]
    else:
        found.append(condition("Ready", "AwaitingPayment", "waiting for payment", "False"))
    return found


def _statuses(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the operator writes on the way to AwaitingPayment, then to Settled."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    history = [
        {"at": now, "phase": "Authorized", "reason": "UserAuthorized"},
        {"at": now, "phase": "Reserved", "reason": "StockReserved"},
        {"at": now, "phase": "AwaitingPayment", "reason": "PaymentPageReady"},
    ]
    waiting = {
        "phase": "AwaitingPayment",
        "observedGeneration": 1,
        "orderId": name,
        "amounts": {"subtotal": 1000, "discount": 0, "fees": 0, "total": 1000},
        "expiresAt": now,
        "history": history,
        "conditions": _conditions(now, paid=False),
        "payment": {
            "snapToken": str(uuid.uuid4()),
            "redirectUrl": f"http://127.0.0.1:18900/snap/v3/redirection/{uuid.uuid4()}",
        },
    }
    paid = {
        "phase": "Settled",
        "history": [*history, {"at": now, "phase": "Settled", "reason": "Paid"}],
        "conditions": _conditions(now, paid=True),
        "payment": {
            "transactionStatus": "settlement",
            "fraudStatus": "accept",
            "transactionId": str(uuid.uuid4()),
            "paidAt": now,
        },
    }
    return waiting, paid


async def _ensure_namespace(core: client.CoreV1Api) -> None:
    try:
        await core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=RAW_NAMESPACE))
        )
    except ApiException as exc:
        if exc.status != 409:
            raise


async def raw(bench: Bench, workers: int, count: int) -> Raw:
    """Create + two compare-and-swap status patches per Checkout, in a namespace no
    operator watches, ``workers`` at a time; then delete them all."""
    custom = client.CustomObjectsApi(bench.kube)
    await _ensure_namespace(client.CoreV1Api(bench.kube))
    done = 0
    cpu_before = CpuSnapshot.take(bench.cfg, time.monotonic())
    began = time.monotonic()

    async def one() -> None:
        name = f"raw-{uuid.uuid4().hex[:24]}"
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "labels": {"checkout.saga.dev/user": "raw"}},
            "spec": {
                "userId": "raw",
                "items": [{"productId": "raw", "unitPrice": 1000, "quantity": 1}],
                "paymentTTLSeconds": 900,
            },
        }
        created = await custom.create_namespaced_custom_object(
            GROUP, VERSION, RAW_NAMESPACE, PLURAL, body
        )
        for status in _statuses(name):
            created = await custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                RAW_NAMESPACE,
                PLURAL,
                name,
                {
                    "metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
                    "status": status,
                },
                _content_type="application/merge-patch+json",  # type: ignore[call-arg]
            )

    async def worker() -> None:
        nonlocal done
        while done < count:
            done += 1
            await one()

    await asyncio.gather(*(worker() for _ in range(workers)))
    seconds = time.monotonic() - began
    cpu = CpuSnapshot.take(bench.cfg, time.monotonic()).minus(cpu_before)
    await custom.delete_collection_namespaced_custom_object(GROUP, VERSION, RAW_NAMESPACE, PLURAL)
    return Raw(done, seconds, cpu)


# --- open loop -----------------------------------------------------------------------


@dataclass
class OpenLoop:
    rate: float
    seconds: float
    sent: int
    outcomes: Counter[str]  # link, 202-no-link, 409, 429, 503, other, error, timeout
    link: list[float]  # POST -> payment link, seconds
    refusals: list[float]  # 429/503 answer times
    drain_seconds: float


def _outcome(answer: Answer, link: float | None) -> str:
    if link is not None:
        return "link"
    if answer.status == -1:
        return "timeout"
    if answer.status == 0:
        return "error"
    if answer.status in (200, 201, 202):
        return "no link"
    if answer.status in (409, 429, 503):
        return str(answer.status)
    return "other"


async def open_loop(bench: Bench, rate: float, seconds: float) -> OpenLoop:
    total = int(rate * seconds)
    outcomes: Counter[str] = Counter()
    links: list[float] = []
    refusals: list[float] = []
    created: list[tuple[Account, str]] = []
    loop = asyncio.get_running_loop()

    async def arrival(i: int) -> None:
        buyer = bench.accounts.take()
        product = bench.products[i % len(bench.products)]
        began = time.monotonic()
        answer = await bench.shop.checkout(buyer, product, within=WAIT)
        cid, link = await link_of(bench, answer, began)
        if cid is not None:
            created.append((buyer, cid))
        outcome = _outcome(answer, link)
        outcomes[outcome] += 1
        if link is not None:
            links.append(link)
        elif outcome in ("429", "503"):
            refusals.append(answer.seconds)

    start = loop.time()
    tasks = []
    for i in range(total):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(arrival(i)))
    await asyncio.gather(*tasks)
    _, drain = await cancel_all(bench.shop, bench.watcher, created, DRAIN)
    return OpenLoop(rate, seconds, total, outcomes, links, refusals, drain)


# --- flash sale ----------------------------------------------------------------------


@dataclass
class FlashSale:
    buyers: int
    units: int
    winners: int
    refused: int
    unanswered: int
    retries: int
    all_answered: float  # seconds from the start until the last buyer had an answer
    answers: list[float]  # each buyer's final answer, seconds from the start
    created: int  # Checkouts created in the namespace during the sale
    late: list[float]  # answer times of buyers arriving after the sell-out
    late_refused: int
    late_created: int
    drain_seconds: float


async def flash_sale(bench: Bench, buyers: int, units: int, late_buyers: int) -> FlashSale:
    product = await bench.shop.product(bench.owner, stock=units)
    audit = AuditCounts(bench.audit_log, NAMESPACE)
    accounts = [bench.accounts.take() for _ in range(buyers)]
    winners: list[tuple[Account, str]] = []
    answers: list[float] = []
    refused = unanswered = retries = 0
    began = time.monotonic()

    async def buyer(account: Account) -> None:
        nonlocal refused, unanswered, retries
        while time.monotonic() - began < 2 * WAIT:
            answer = await bench.shop.checkout(account, product, within=WAIT)
            if answer.status in (429, 503):
                retries += 1
                await _backoff(answer)
                continue
            cid = answer.checkout_id
            if answer.status in (200, 201) and cid:
                winners.append((account, cid))
            elif answer.status == 202 and cid:
                seen = await bench.watcher.wait(cid, has_link, WAIT)
                if seen is None:
                    break
                if seen.has_link:
                    winners.append((account, cid))
                else:
                    refused += 1
            elif answer.status == 409:
                refused += 1
            else:
                break
            answers.append(time.monotonic() - began)
            return
        unanswered += 1

    async with bench.shop.crowd():  # 1,000 connections at once: not through httpx
        await asyncio.gather(*(buyer(a) for a in accounts))
        all_answered = time.monotonic() - began
        created = audit.creates()
        late: list[float] = []
        late_refused = 0
        for _ in range(late_buyers):
            account = bench.accounts.take()
            answer = await bench.shop.checkout(account, product)
            late.append(answer.seconds)
            late_refused += answer.status == 409
            if answer.status in (200, 201, 202) and answer.checkout_id:
                winners.append((account, answer.checkout_id))
    late_created = audit.creates() - created
    _, drain = await cancel_all(bench.shop, bench.watcher, winners, DRAIN)
    await bench.shop.delete_product(bench.owner, product)
    return FlashSale(
        buyers,
        units,
        len(winners),
        refused,
        unanswered,
        retries,
        all_answered,
        answers,
        created,
        late,
        late_refused,
        late_created,
        drain,
    )


# --- live checkouts ------------------------------------------------------------------


@dataclass
class Live:
    wanted: int
    live: int
    create_seconds: float
    rss_mib: float  # operator, with them live
    window: float
    status_calls_ours: int
    status_calls_all: int
    drain_seconds: float


async def live(bench: Bench, count: int, window: float) -> Live:
    product = await bench.shop.product(bench.owner, stock=count + 10)
    created: list[tuple[Account, str]] = []
    began = time.monotonic()

    async def one() -> None:
        for _ in range(20):
            account = bench.accounts.take()
            answer = await bench.shop.checkout(account, product, ttl=3600)
            if answer.status in (429, 503):
                await _backoff(answer)
                continue
            if answer.checkout_id and answer.status in (200, 201, 202):
                created.append((account, answer.checkout_id))
            return

    await bounded([one for _ in range(count)], concurrency=16)
    ready, _ = await bench.watcher.wait_all([n for _, n in created], has_link, WAIT)
    create_seconds = time.monotonic() - began
    ours = {n for _, n in created}
    calls = StatusCalls(bench.cfg.run_dir / "logs" / "midtrans-sandbox.log")
    await asyncio.sleep(window)
    asked = calls.read()
    rss = rss_mib(pid_of(bench.cfg, SYSTEM["operator"]))
    _, drain = await cancel_all(bench.shop, bench.watcher, created, DRAIN)
    await bench.shop.delete_product(bench.owner, product)
    return Live(
        count,
        ready,
        create_seconds,
        rss,
        window,
        sum(a in ours for a in asked),
        len(asked),
        drain,
    )
