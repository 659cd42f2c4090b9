"""The reconciler's queue discipline, with the saga steps replaced by recorders."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from checkout_operator import reconciler as module
from checkout_operator.actions import Retry
from checkout_operator.readmodel import ReadModel
from checkout_operator.reconciler import Reconciler


def body(name: str, rv: int, uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": str(rv)}}


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace, name))


class FakeDeps:
    def __init__(self) -> None:
        self.kube = FakeKube()
        self.readmodel = ReadModel(None)  # its memory only: no journal here

    @staticmethod
    def clock() -> dt.datetime:
        return dt.datetime.now(dt.UTC)


async def run_until(predicate: Any, rec: Reconciler, within: float = 5.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(rec.run(stop))
    try:
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 (polls plain state)
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task


async def test_one_step_at_a_time_per_checkout_on_the_newest_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    running: set[str] = set()
    overlap: list[str] = []

    async def fake_reconcile(deps: Any, b: dict[str, Any]) -> None:
        name = b["metadata"]["name"]
        if name in running:
            overlap.append(name)
        running.add(name)
        seen.append(f"{name}@{b['metadata']['resourceVersion']}")
        await asyncio.sleep(0.02)
        running.discard(name)

    monkeypatch.setattr(module, "reconcile", fake_reconcile)
    rec = Reconciler(FakeDeps(), workers=4)  # type: ignore[arg-type]
    for rv in range(1, 6):  # a burst of events for one checkout
        rec.observe("MODIFIED", body("a", rv))
    rec.observe("MODIFIED", body("b", 1))
    rec.observe("MODIFIED", body("a", 3))  # an older version arriving late is ignored
    await run_until(lambda: len(seen) >= 2, rec)
    assert overlap == []
    assert sorted(seen) == ["a@5", "b@1"]


async def test_retry_backs_off_and_rereads(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def flaky(deps: Any, b: dict[str, Any]) -> None:
        calls.append(b["metadata"]["resourceVersion"])
        if len(calls) < 3:
            raise Retry("lost a race")

    monkeypatch.setattr(module, "reconcile", flaky)
    deps = FakeDeps()
    deps.kube.objects[("ns", "a")] = body("a", 9)
    rec = Reconciler(deps, workers=1)  # type: ignore[arg-type]
    rec.observe("ADDED", body("a", 1))
    await run_until(lambda: len(calls) >= 3, rec)
    assert calls[0] == "1" and calls[1:] == ["9", "9"]  # re-read after the first conflict


async def test_a_crashing_step_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []

    async def buggy(deps: Any, b: dict[str, Any]) -> None:
        if b["metadata"]["name"] == "bad":
            raise RuntimeError("bug")
        done.append(b["metadata"]["name"])

    monkeypatch.setattr(module, "reconcile", buggy)
    rec = Reconciler(FakeDeps(), workers=1)  # type: ignore[arg-type]
    rec.observe("ADDED", body("bad", 1))
    rec.observe("ADDED", body("good", 1))
    await run_until(lambda: done == ["good"], rec)


async def test_deadlines_wake_the_checkout_up(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def wait_a_bit(deps: Any, b: dict[str, Any]) -> dt.datetime | None:
        calls.append(loop.time())
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.2) if len(calls) == 1 else None

    monkeypatch.setattr(module, "reconcile", wait_a_bit)
    rec = Reconciler(FakeDeps(), workers=1)  # type: ignore[arg-type]
    rec.observe("ADDED", body("a", 1))
    await run_until(lambda: len(calls) >= 2, rec)
    assert calls[1] - calls[0] >= 0.2


async def test_a_retry_with_a_time_looks_again_no_sooner(monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry that names its time (the next Snap order's) waits for it, not the backoff."""
    monkeypatch.setattr(module, "backoff_delay", lambda failures: 0.001)
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def paced(deps: Any, b: dict[str, Any]) -> None:
        calls.append(loop.time())
        if len(calls) == 1:
            raise Retry("not yet", at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.3))

    monkeypatch.setattr(module, "reconcile", paced)
    deps = FakeDeps()
    deps.kube.objects[("ns", "a")] = body("a", 1)
    rec = Reconciler(deps, workers=1)  # type: ignore[arg-type]
    rec.observe("ADDED", body("a", 1))
    await run_until(lambda: len(calls) >= 2, rec)
    assert calls[1] - calls[0] >= 0.29


async def test_deleted_checkouts_are_released(monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[str] = []

    class Record:
        order_id = "a"
        uid = "u1"

    class FakeReadModel(ReadModel):
        async def get(self, order_id: str) -> Any:
            return Record()

    async def release(deps: Any, record: Any, last: dict[str, Any] | None = None) -> None:
        assert last is not None and last["metadata"]["resourceVersion"] == "2"  # the final body
        released.append(record.order_id)

    async def nothing(deps: Any, b: dict[str, Any]) -> None:
        return None

    monkeypatch.setattr(module, "release_deleted", release)
    monkeypatch.setattr(module, "reconcile", nothing)
    deps = FakeDeps()
    deps.readmodel = FakeReadModel(None)
    rec = Reconciler(deps, workers=1)  # type: ignore[arg-type]
    rec.observe("ADDED", body("a", 1))
    rec.observe("DELETED", body("a", 2))
    rec.observe("DELETED", body("a", 3, uid="someone-else"))
    await run_until(lambda: released == ["a"], rec)
    await asyncio.sleep(0.05)
    assert released == ["a"] and ("ns", "a") not in rec.cache


async def test_a_deleted_checkouts_release_holds_only_its_ending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst of TTL deletes queues thousands of releases: none may hold a whole body."""
    held: list[dict[str, Any]] = []
    go = asyncio.Event()

    class Record:
        order_id = "a"
        uid = "u1"

    class SlowReadModel(ReadModel):
        async def get(self, order_id: str) -> Any:
            await go.wait()
            return Record()

    async def release(deps: Any, record: Any, last: dict[str, Any] | None = None) -> None:
        assert last is not None
        held.append(last)

    monkeypatch.setattr(module, "release_deleted", release)
    deps = FakeDeps()
    deps.readmodel = SlowReadModel(None)
    rec = Reconciler(deps, workers=1)  # type: ignore[arg-type]
    gone = body("a", 5) | {
        "spec": {"userId": "u", "items": [{"productId": "p", "unitPrice": 5, "quantity": 1}]},
        "status": {
            "phase": "Settled",
            "payment": {"transactionStatus": "settlement", "redirectUrl": "https://x" * 50},
            "history": [{"phase": "Settled", "reason": "PaymentSettled"}],
            "conditions": [{"type": "Ready", "status": "True"}] * 20,
        },
    }
    gone["metadata"]["managedFields"] = [{"manager": "m", "fieldsV1": {"f:status": {}}}] * 20
    rec.observe("DELETED", gone)
    (task,) = rec._background
    waiting = task.get_coro().cr_frame.f_locals["last"]  # type: ignore[union-attr]
    assert "items" not in waiting["spec"] and "conditions" not in waiting["status"]
    assert "managedFields" not in waiting["metadata"]
    assert "redirectUrl" not in waiting["status"]["payment"]
    go.set()
    await task
    (last,) = held
    assert last["status"]["phase"] == "Settled"  # what a release reads: the ending
    assert last["status"]["history"] == gone["status"]["history"]
    assert last["status"]["payment"] == {"transactionStatus": "settlement"}


def test_the_cache_keeps_no_field_ownership_or_applied_copies() -> None:
    full = body("a", 7)
    full["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    full["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": "{...}" * 1000,
        "checkout.saga.dev/request-hash": "abc",
    }
    slim = module.slim(full)
    assert "managedFields" not in slim["metadata"]
    assert slim["metadata"]["annotations"] == {"checkout.saga.dev/request-hash": "abc"}
    assert slim["metadata"]["resourceVersion"] == "7" and slim["metadata"]["uid"] == "u1"
    assert "managedFields" in full["metadata"]  # the event's own body is left alone


def test_cached_bodies_share_their_keys_and_words() -> None:
    """Each watch event decodes its own copy of every key and word; the cache keeps one."""
    import json

    text = json.dumps(body("a", 7) | {"status": {"phase": "AwaitingPayment"}})
    first, second = module.slim(json.loads(text)), module.slim(json.loads(text))
    assert first == second == json.loads(text)
    (key_1,) = (k for k in first if k == "status")
    (key_2,) = (k for k in second if k == "status")
    assert key_1 is key_2
    assert first["status"]["phase"] is second["status"]["phase"]
    long = "x" * (module.SHARED_UP_TO + 1)  # a token or a link: unique, not interned
    assert module.compact({"t": long})["t"] is long


def test_an_ended_checkout_is_cached_without_what_is_never_read_again() -> None:
    import datetime as dt

    from checkout_operator.saga import View, plan

    full = body("a", 9) | {
        "metadata": body("a", 9)["metadata"]
        | {"labels": {"checkout.saga.dev/user": "u"}, "annotations": {"h": "x" * 64}},
        "spec": {"userId": "u", "items": [{"productId": "p", "unitPrice": 5, "quantity": 1}]},
        "status": {
            "phase": "Expired",
            "orderId": "a",
            "amounts": {"total": 5},
            "failure": {"reason": "PaymentExpired", "message": "expired"},
            "payment": {"transactionStatus": "expire", "snapToken": None},
            "history": [
                {"phase": "AwaitingPayment", "at": "2026-11-28T10:00:00Z", "reason": "Page"},
                {"phase": "Expired", "at": "2026-11-28T10:15:00Z", "reason": "PaymentExpired"},
            ],
            "conditions": [{"type": "Ready", "status": "False", "reason": "PaymentExpired"}],
        },
    }
    kept = module.slim(full)
    assert kept[module.PARTIAL] is True
    assert "items" not in kept["spec"] and "conditions" not in kept["status"]
    assert "amounts" not in kept["status"] and "snapToken" not in kept["status"]["payment"]
    assert kept["status"]["history"] == full["status"]["history"][-1:]
    assert kept["status"]["failure"] == full["status"]["failure"]
    named = {"namespace", "name", "uid", "resourceVersion"}  # Events, the TTL delete
    assert kept["metadata"] == {k: full["metadata"][k] for k in named}
    # The saga decides the same on what is kept.
    assert View.of(kept) == View.of(full)
    now, ttl = dt.datetime(2026, 11, 28, 11, tzinfo=dt.UTC), dt.timedelta(hours=1)
    assert plan(View.of(kept), now, ttl) == plan(View.of(full), now, ttl)
    live = body("b", 3) | {"status": {"phase": "AwaitingPayment", "conditions": []}}
    assert module.PARTIAL not in module.slim(live)  # a live one is kept whole


async def test_a_step_that_writes_an_ended_checkout_gets_the_whole_resource() -> None:
    deps = FakeDeps()
    whole = body("a", 4) | {"status": {"phase": "Settled", "conditions": [{"type": "Ready"}]}}
    deps.kube.objects[("ns", "a")] = whole
    rec = Reconciler(deps, workers=1)  # type: ignore[arg-type]
    rec.observe("ADDED", whole)
    assert rec.cache[("ns", "a")][module.PARTIAL]
    seen: list[dict[str, Any]] = []

    async def write(got: dict[str, Any]) -> None:
        seen.append(got)

    assert await rec.exclusive(("ns", "a"), write, whole=True)
    assert seen == [whole]
    assert await rec.exclusive(("ns", "a"), write)  # reading only: the cached part does
    assert seen[-1][module.PARTIAL]


async def test_the_phase_gauge_follows_each_change_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import REGISTRY

    async def released(deps: Any, record: Any, last: dict[str, Any] | None = None) -> None:
        return None

    class NoRecords(ReadModel):
        async def get(self, order_id: str) -> None:
            return None

    monkeypatch.setattr(module, "release_deleted", released)
    deps = FakeDeps()
    deps.readmodel = NoRecords(None)
    rec = Reconciler(deps, workers=1)  # type: ignore[arg-type]

    def gauge(phase: str) -> float | None:
        return REGISTRY.get_sample_value("checkouts", {"phase": phase})

    def at(name: str, rv: int, phase: str) -> dict[str, Any]:
        b = body(name, rv)
        b["status"] = {"phase": phase}
        return b

    rec.observe("ADDED", at("g1", 1, "GaugeA"))
    rec.observe("ADDED", at("g2", 1, "GaugeA"))
    assert gauge("GaugeA") == 2
    rec.observe("MODIFIED", at("g1", 2, "GaugeB"))
    assert (gauge("GaugeA"), gauge("GaugeB")) == (1, 1)
    rec.observe("MODIFIED", at("g1", 1, "GaugeA"))  # an older body changes nothing
    assert (gauge("GaugeA"), gauge("GaugeB")) == (1, 1)
    rec.observe("DELETED", at("g2", 2, "GaugeA"))
    assert (gauge("GaugeA"), gauge("GaugeB")) == (0, 1)
    assert rec.phases() == {"GaugeB": 1}
    await asyncio.sleep(0)  # let the deletion's background task run


async def test_a_new_checkout_is_looked_at_before_a_backlog_of_ended_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restart lists every ended checkout and finds thousands of TTL deletes due (a
    minute of work): a checkout created meanwhile starts first, not behind them."""
    seen: list[str] = []

    async def step(deps: Any, b: dict[str, Any]) -> None:
        seen.append(b["metadata"]["name"])
        await asyncio.sleep(0)

    monkeypatch.setattr(module, "reconcile", step)
    rec = Reconciler(FakeDeps(), workers=1)  # type: ignore[arg-type]
    for n in range(200):  # the listing: ended ones, uid and name their own
        rec.observe(None, body(f"ended-{n}", 1, uid=f"e{n}") | {"status": {"phase": "Settled"}})
    rec.observe("ADDED", body("new", 1, uid="n1"))
    rec.observe("ADDED", body("paying", 1, uid="p1") | {"status": {"phase": "AwaitingPayment"}})
    await run_until(lambda: len(seen) == 202, rec)
    assert seen[:2] == ["new", "paying"]
    assert seen[2:] == [f"ended-{n}" for n in range(200)]  # then in arrival order


async def test_a_step_that_read_a_checkout_before_its_deletion_does_not_bring_it_back() -> None:
    """The watch's DELETED event arrives while a step awaits: the body the step answers
    with (written, or read, before the deletion) must not put the checkout back in the
    cache, where it would stay (polled, counted) until a sweep compared every row."""

    class NoJournal(ReadModel):
        async def get(self, order_id: str) -> Any:
            return None

    deps = FakeDeps()
    deps.readmodel = NoJournal(None)
    rec = Reconciler(deps, workers=1)  # type: ignore[arg-type]
    awaiting = body("a", 4) | {"status": {"phase": "AwaitingPayment"}}
    rec.observe("ADDED", awaiting)
    deleted = asyncio.Event()

    async def step(got: dict[str, Any]) -> dict[str, Any]:
        await deleted.wait()
        return got | {"metadata": got["metadata"] | {"resourceVersion": "5"}}

    running = asyncio.create_task(rec.exclusive(("ns", "a"), step))
    await asyncio.sleep(0)
    rec.observe("DELETED", awaiting)
    deleted.set()
    assert await running
    assert ("ns", "a") not in rec.cache
    assert rec.phases() == {}
    rec.observe("ADDED", body("a", 9, uid="u2"))  # the name used again: a new checkout
    assert rec.cache[("ns", "a")]["metadata"]["uid"] == "u2"
    async with asyncio.timeout(5):
        await rec.idle()


async def delete_and_wait_for_release(monkeypatch: pytest.MonkeyPatch, journal: ReadModel) -> None:
    """Checkout "a" deleted, its release retried at once: until the release is done."""
    monkeypatch.setattr(module, "backoff_delay", lambda failures: 0.001)
    deps = FakeDeps()
    deps.readmodel = journal
    rec = Reconciler(deps, workers=1)  # type: ignore[arg-type]
    rec.observe("DELETED", body("a", 2))
    async with asyncio.timeout(5):
        await rec.idle()


async def test_the_release_of_a_deleted_checkout_is_retried_while_the_journal_is_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released: list[str] = []
    failures = [ConnectionError("postgres restarting")] * 3

    class Record:
        order_id = "a"
        uid = "u1"

    class FlakyReadModel(ReadModel):
        async def get(self, order_id: str) -> Any:
            if failures:
                raise failures.pop()
            return Record()

    async def release(deps: Any, record: Any, last: dict[str, Any] | None = None) -> None:
        released.append(record.order_id)

    monkeypatch.setattr(module, "release_deleted", release)
    await delete_and_wait_for_release(monkeypatch, FlakyReadModel(None))
    assert failures == [] and released == ["a"]


async def test_a_stop_does_not_wait_for_a_release_that_keeps_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Postgres away at shutdown: the release is left to the next leader's sweep, and a
    deletion the watch brings while the reconciler stops starts no release at all."""
    gets: list[str] = []

    class DownReadModel(ReadModel):
        async def get(self, order_id: str) -> Any:
            gets.append(order_id)
            raise ConnectionError("postgres away")

    monkeypatch.setattr(module, "STOP_GRACE", 0.3)
    monkeypatch.setattr(module, "backoff_delay", lambda failures: 0.01)
    deps = FakeDeps()
    deps.readmodel = DownReadModel(None)
    rec = Reconciler(deps, workers=1)  # type: ignore[arg-type]
    stop = asyncio.Event()
    running = asyncio.create_task(rec.run(stop))
    rec.observe("DELETED", body("a", 2))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.sleep(0.1)  # in the stop's grace: the watch is still feeding it
    rec.observe("ADDED", body("b", 1, uid="u2"))
    rec.observe("DELETED", body("b", 2, uid="u2"))
    async with asyncio.timeout(5):
        await running
    async with asyncio.timeout(1):
        await rec.idle()
    assert "b" not in gets and ("ns", "b") not in rec.cache


async def test_a_release_that_keeps_failing_is_left_to_the_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tries: list[str] = []

    class BrokenReadModel(ReadModel):
        async def get(self, order_id: str) -> Any:
            tries.append(order_id)
            raise ConnectionError("postgres away")

    await delete_and_wait_for_release(monkeypatch, BrokenReadModel(None))
    assert tries == ["a"] * module.RELEASE_TRIES
