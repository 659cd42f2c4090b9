"""What a restarted operator keeps of each ended checkout (issue 12, session 9).

Ended Checkouts wait an hour for their TTL delete, so after a restart they are most of
what the operator knows. Each used to keep kopf's per-object memory, a lock of the
reconciler's and a timer of its own until its deletion: with 15,014 ended, 286 MiB
idle (docs/performance.md, "Session 8"). Now each keeps its slim body and a place in
one queue of wake-ups.

Real apiserver, Postgres, NATS, User and Product services, kopf's real watch.
"""

from __future__ import annotations

import datetime as dt

from tests.helpers.waiting import eventually
from tests.integration.saga_fixtures import SagaEnv
from tests.integration.test_restart_journal_reads import cancelled
from tests.integration.test_saga_operator import product


async def test_a_restart_keeps_no_lock_timer_or_kopf_memory_per_ended_checkout(
    saga: SagaEnv,
) -> None:
    """Red before: kopf remembered both checkouts, and the reconciler held a lock for
    each until its TTL delete (the single timer: ``tests/unit/test_wakeups.py``)."""
    operator = await saga.start_operator(ttl_after_finished=dt.timedelta(hours=1))
    p = await product(saga, stock=2)
    names = [await cancelled(saga, p), await cancelled(saga, p)]
    await operator.shutdown()

    restarted = await saga.start_operator(ttl_after_finished=dt.timedelta(hours=1))
    reconciler = restarted.reconciler
    keys = [(saga.namespace, name) for name in names]
    await eventually(lambda: all(reconciler.waits(k) for k in keys), within=30, interval=0.05)
    assert all(k in reconciler.cache for k in keys)  # still known: the TTL delete needs it
    assert list(restarted.watcher.memories.iter_all_memories()) == []
    assert len(reconciler._locks) == 0
