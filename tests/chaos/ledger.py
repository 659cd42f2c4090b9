"""What the system must look like once every saga has run its course.

Two judges: ``saga-devenv audit`` (:func:`audit`, docs/audit.md), which checks the whole
private system's ledger, and the suite's own checks below, which also know what each
buyer did and so which ending and which stock each product must show.

:func:`gather` collects the facts (Checkout resources from the apiserver, the operator's
read model and journal and the Product service's stock and reservations from Postgres,
each Midtrans order's state from the sandbox); :func:`judge` compares them with what
the buyers did and returns every mismatch, naming the checkout or product:

* every Checkout finished (terminal) or deleted; its read-model row finished too, with
  the same phase as the resource while that exists;
* the ending each buyer's actions call for (paid: Settled, expired: Expired, ...);
* every reservation closed: sold for a Settled checkout, released for any other;
* per product: stock = initial - sold (by Settled checkouts), nothing reserved;
* money: the order a Settled checkout was paid by is paid in full and kept; every other
  Midtrans order of a checkout holds no money (voided, refunded, expired or never paid).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from saga_devenv import apps, servers
from saga_devenv.config import DevConfig
from tests.chaos.shoppers import TERMINAL, Product, Saga
from tests.e2e.conftest import System

# Midtrans statuses that hold money or can still take it.
HOLDS_MONEY = frozenset({"settlement", "capture", "partial_refund"})
PAID = frozenset({"settlement", "capture"})


@dataclass
class Audit:
    mismatches: list[str]
    warnings: list[str]
    checked: dict[str, int]  # what it looked at, by kind


async def audit(cfg: DevConfig, settle_seconds: float) -> Audit:
    """``python -m saga_devenv audit --json`` on the private system; its findings as lines.
    An audit that could not check (exit 2) is a mismatch too, naming why."""
    # Every setting by flag: flags win over whatever the caller's shell exports (e.g. after
    # `source .run/env.sh`, which would point the audit at the shared system).
    dsn = servers.postgres_dsn(cfg)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "saga_devenv", "audit", "--json", "-n", "default"),
        *("--settle-seconds", str(settle_seconds), "--kubeconfig", str(cfg.kubeconfig)),
        *("--database-url", dsn, "--products-database-url", dsn),
        *("--readmodel-schema", "checkouts", "--products-schema", "products"),
        *("--midtrans-url", apps.SANDBOX_URL),
        *("--midtrans-server-key-file", str(cfg.secret_file("midtrans-server-key"))),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    try:
        answer = json.loads(out)
    except ValueError:
        answer = {}
    if process.returncode not in (0, 1) or "mismatches" not in answer:
        why = answer.get("error") or err.decode(errors="replace")[-2000:]
        return Audit([f"audit: exit {process.returncode}: {why}"], [], {})

    def line(finding: dict[str, str]) -> str:
        return (
            f"audit {finding['check']} {finding['subject']}: "
            f"{finding['left']} vs {finding['right']}"
        )

    return Audit(
        [line(f) for f in answer["mismatches"]],
        [line(f) for f in answer.get("warnings", [])],
        dict(answer.get("checked", {})),
    )


@dataclass
class Facts:
    resources: dict[str, str | None] = field(default_factory=dict)  # name -> phase
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # read model, by order id
    pages: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    stock: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (stock, reserved)
    reservations: dict[str, str] = field(default_factory=dict)  # order id -> status
    orders: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # Midtrans


async def gather(
    cfg: DevConfig, system: System, http: httpx.AsyncClient, sagas: list[Saga]
) -> Facts:
    facts = Facts()
    listed = await asyncio.to_thread(
        system.platform.kubectl, "get", "checkouts", "-o", "json", namespace="default"
    )
    for item in json.loads(listed.stdout)["items"]:
        facts.resources[item["metadata"]["name"]] = (item.get("status") or {}).get("phase")
    ids = [s.id for s in sagas]
    products = sorted({p.id for s in sagas for p, _ in s.lines})
    conn = await asyncpg.connect(servers.postgres_dsn(cfg))
    try:
        for row in await conn.fetch(
            "SELECT order_id, phase, paid_order_id, midtrans_order_id "
            "FROM checkouts.checkouts WHERE order_id = ANY($1)",
            ids,
        ):
            facts.rows[row["order_id"]] = dict(row)
        for row in await conn.fetch(
            "SELECT order_id, midtrans_order_id FROM checkouts.payment_pages "
            "WHERE order_id = ANY($1)",
            ids,
        ):
            facts.pages[row["order_id"]].add(row["midtrans_order_id"])
        for row in await conn.fetch(
            "SELECT id, stock, reserved FROM products.products WHERE id = ANY($1)", products
        ):
            facts.stock[row["id"]] = (row["stock"], row["reserved"])
        for row in await conn.fetch(
            "SELECT transaction_id, status FROM products.reservations "
            "WHERE transaction_id = ANY($1)",
            ids,
        ):
            facts.reservations[row["transaction_id"]] = row["status"]
    finally:
        await conn.close()
    orders = {o for s in sagas for o in [*facts.pages[s.id], *s.paid]}
    for row in facts.rows.values():
        orders |= {o for o in (row["paid_order_id"], row["midtrans_order_id"]) if o}
    limit = asyncio.Semaphore(16)

    async def snapshot(order: str) -> None:
        async with limit:
            reply = await http.get(f"{system.sandbox}/_sandbox/transactions/{order}")
        facts.orders[order] = reply.json() if reply.status_code == 200 else None

    await asyncio.gather(*(snapshot(o) for o in sorted(orders)))
    return facts


def judge(sagas: list[Saga], products: list[Product], facts: Facts) -> list[str]:
    found: list[str] = []
    sold: dict[str, int] = defaultdict(int)
    for saga in sagas:
        found += [f"{saga.id} ({saga.kind}): {p}" for p in saga.problems]
        found += _checkout(saga, facts, sold)
    for product in products:
        stock, reserved = facts.stock.get(product.id, (None, None))
        if stock != product.stock - sold[product.id] or reserved != 0:
            found.append(
                f"product {product.id}: stock {stock}, reserved {reserved}; expected stock "
                f"{product.stock} - {sold[product.id]} sold = "
                f"{product.stock - sold[product.id]}, reserved 0"
            )
    return found


def _checkout(saga: Saga, facts: Facts, sold: dict[str, int]) -> list[str]:
    name = f"{saga.id} ({saga.kind})"
    row = facts.rows.get(saga.id)
    on_cluster = saga.id in facts.resources
    phase = facts.resources.get(saga.id)
    found = []
    if on_cluster and phase not in TERMINAL:
        found.append(f"{name}: Checkout still {phase}")
    if saga.deleted and on_cluster:
        found.append(f"{name}: deleted with kubectl but still there ({phase})")
    reservation = facts.reservations.get(saga.id)
    if row is None:
        if on_cluster or reservation is not None:
            found.append(f"{name}: no read-model row (resource {phase}, reservation {reservation})")
        return found
    ended = row["phase"]
    if ended not in TERMINAL:
        found.append(f"{name}: read model says {ended}")
    elif on_cluster and phase in TERMINAL and phase != ended:
        found.append(f"{name}: read model says {ended}, the Checkout {phase}")
    if saga.expected and ended != saga.expected:
        found.append(f"{name}: ended {ended}, expected {saga.expected} (buyer saw {saga.seen})")
    if ended == "Settled":
        for product, quantity in saga.lines:
            sold[product.id] += quantity
        if reservation != "settled":
            found.append(f"{name}: Settled but its reservation is {reservation}")
    elif reservation in ("reserved", "committed", "settled"):
        found.append(f"{name}: ended {ended} but its reservation is {reservation}")
    found += _money(name, saga, row, facts)
    return found


def _money(name: str, saga: Saga, row: dict[str, Any], facts: Facts) -> list[str]:
    found = []
    kept = row["paid_order_id"] if row["phase"] == "Settled" else None
    if row["phase"] == "Settled" and not kept:
        found.append(f"{name}: Settled without a journaled payment")
    orders = {*facts.pages[saga.id], *saga.paid, *([kept] if kept else [])}
    for order in sorted(orders):
        state = facts.orders.get(order)
        status = state and state["transaction_status"]
        refunded = state["refunded_amount"] if state else 0
        if order == kept:
            if status not in PAID or refunded:
                found.append(f"{name}: paid by {order} but Midtrans says {status}, {refunded} back")
        elif status in HOLDS_MONEY or status == "pending":
            found.append(f"{name}: Midtrans order {order} is {status} (checkout {row['phase']})")
    return found
