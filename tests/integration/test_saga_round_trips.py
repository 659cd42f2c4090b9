"""How many Postgres round trips the operator spends on one paid checkout.

Each statement is a round trip to Postgres and a slice of both processes' CPU (issue
12: about a dozen pool calls per checkout, several of them one-statement transactions
of their own). The count is taken from the operator's own pool, on the real Postgres,
for a checkout carried from creation to Settled by the listener's settlement, the way
the benchmark's closed loop pays.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from saga_kit.events import Topology
from tests.helpers.waiting import eventually
from tests.integration.saga_fixtures import SagaEnv

# The background loops' scans: one pool call per round, however many checkouts there are.
_SCANS = re.compile(
    r"FROM payment_returns WHERE state IN"  # the returns' due list
    r"|FROM payment_returns WHERE state = 'refused'"  # the returns' gauge
    r"|WHERE finished_at IS NOT NULL AND reservation_closed_at IS NULL"  # the relay's
    r"|FROM checkouts WHERE deleted_at IS NULL"  # the sweep's
)
# asyncpg learning a type (an array's), once per connection.
_INTROSPECTION = re.compile(
    r"^SELECT current_setting\('jit'\)|^WITH RECURSIVE typeinfo_tree|^SELECT set_config\('jit'"
)


@dataclass
class PoolTally:
    """The statements sent and the connections taken from the pools of one schema."""

    schema: str
    statements: list[str] = field(default_factory=list)
    acquires: int = 0

    def scans(self) -> int:
        return sum(1 for q in self.statements if _SCANS.search(q))

    def per_checkout(self) -> list[str]:
        return [q for q in self.statements if not _SCANS.search(q) and not _INTROSPECTION.search(q)]


@pytest.fixture
def tally(saga: SagaEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[PoolTally]:
    """Counts what the operator's pool sends (pools made after this fixture)."""
    counted = PoolTally(saga.settings.db_schema)
    create_pool = asyncpg.create_pool

    def log(query: Any) -> None:
        counted.statements.append(" ".join(query.query.split()))

    async def add_logger(conn: Any) -> None:
        conn.add_query_logger(log)

    async def count_acquire(conn: Any) -> None:
        counted.acquires += 1

    def counting_pool(dsn: str, **kwargs: Any) -> Any:
        if kwargs.get("server_settings", {}).get("search_path") != counted.schema:
            return create_pool(dsn, **kwargs)
        return create_pool(dsn, init=add_logger, setup=count_acquire, **kwargs)

    monkeypatch.setattr(asyncpg, "create_pool", counting_pool)  # as saga_kit.db calls it
    yield counted


async def inbox_done(saga: SagaEnv) -> bool:
    """The operator's payment inbox has acknowledged every notification on its stream."""
    topology = Topology.namespaced(saga.settings.events_namespace)
    nc = await saga.platform.nats()
    try:
        info = await nc.jetstream().consumer_info(topology.payment_stream, "checkout-operator")
    finally:
        await nc.close()
    delivered = int(info.delivered.stream_seq or 0)
    return info.num_pending == 0 and info.num_ack_pending == 0 and delivered > 0


async def test_a_paid_checkout_costs_few_postgres_round_trips(
    saga: SagaEnv, tally: PoolTally
) -> None:
    # No polls: the listener's settlement pays it, as in the benchmark's closed loop.
    await saga.start_operator(poll_min_age=3600.0)
    product = await saga.products.product(price=10_000, stock=5)
    seen, before = len(tally.per_checkout()), tally.acquires - tally.scans()

    name = await saga.create(items=[(product, 10_000, 2)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    await saga.wait_phase(name, "Settled")

    async def done() -> bool:
        # Read with a connection of the test's own: the operator's pool is being counted.
        conn = await asyncpg.connect(saga.platform.postgres_dsn)
        try:
            journaled = await conn.fetchval(
                f"SELECT final_event_published AND reservation_closed_at IS NOT NULL"
                f' FROM "{tally.schema}".checkouts WHERE order_id = $1',
                name,
            )
        finally:
            await conn.close()
        return bool(journaled) and await inbox_done(saga)

    await eventually(done, within=30)
    statements = tally.per_checkout()[seen:]
    acquires = tally.acquires - tally.scans() - before  # a scan is one pool call
    listing = "\n".join(statements)
    print(f"{len(statements)} statements, {acquires} acquires per paid checkout:\n{listing}")
    # Before the round trips were cut (issue 12): 39 statements, 23 acquires.
    assert len(statements) <= 18, listing
    assert acquires <= 18, listing


def refused_status_writes(saga: SagaEnv, name: str) -> int:
    """Status writes to this Checkout the apiserver refused (a lost compare-and-swap)."""
    assert saga.audit is not None
    return sum(
        1
        for e in saga.audit.refresh()
        if (e.get("objectRef") or {}).get("name") == name
        and (e.get("objectRef") or {}).get("subresource") == "status"
        and (e.get("responseStatus") or {}).get("code") == 409
    )


async def test_the_operator_does_not_race_the_listeners_settlement(saga: SagaEnv) -> None:
    """The listener writes Settled, then publishes the payment: the operator's inbox must
    not try to settle from the cache's stale AwaitingPayment (a refused write, a re-read
    and a journal write per paid checkout, for nothing)."""
    await saga.start_operator(poll_min_age=3600.0)
    product = await saga.products.product(price=10_000, stock=10)
    names = []
    for _ in range(4):
        name = await saga.create(items=[(product, 10_000, 1)], paymentTTLSeconds=600)
        names.append(name)
        await saga.wait_phase(name, "AwaitingPayment")
        paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
        assert paid.status_code == 200, paid.text
        await saga.wait_phase(name, "Settled")
        await eventually(lambda: inbox_done(saga), within=30)
    assert [refused_status_writes(saga, name) for name in names] == [0] * len(names)
