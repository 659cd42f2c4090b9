"""kopf lists the Checkouts in pages, not in one answer, and diffs no bodies.

By default kopf asks for every object at once and parses the whole answer: with
10,700 ended Checkouts waiting for their TTL delete, a restarted operator went from
90 to 430 MiB within three seconds, 186 MiB of it that one parsed list (memray), and
stayed at 396 MiB. Paged, the same restart with 17,400 stayed under 300 MiB
(docs/performance.md, "Session 7")."""

from __future__ import annotations

import asyncio
from typing import cast

import kopf
from kopf._cogs.structs import bodies

from checkout_operator.clients.kube import GROUP, LIST_PAGE, PLURAL, VERSION
from checkout_operator.handlers import RelayOnlyMemories, kopf_settings, register
from checkout_operator.reconciler import Reconciler


def registered() -> kopf.OperatorRegistry:
    """The operator's kopf handlers, as ``KopfWatcher`` registers them."""
    registry = kopf.OperatorRegistry()
    loop = asyncio.new_event_loop()
    try:
        register(registry, cast(Reconciler, object()), loop)
    finally:
        loop.close()
    return registry


def test_kopf_lists_in_pages_of_list_page() -> None:
    settings = kopf_settings()
    assert settings.watching.chunk_size == LIST_PAGE
    assert 0 < LIST_PAGE <= 1000


def test_kopf_posts_no_events_of_its_own() -> None:
    # The saga posts one Event per phase change (issue 12: at most 2 per checkout).
    assert kopf_settings().posting.enabled is False


def test_kopf_copies_no_body_to_diff_it() -> None:
    # kopf's default storage deep-copies every event's body to diff it for change
    # handlers (15-21 % of the operator's busy CPU while a restart lists 22,000
    # Checkouts); this operator has none (see the next test).
    body = kopf.Body({"metadata": {"name": "co-1"}, "spec": {"items": [{"quantity": 1}]}})
    storage = kopf_settings().persistence.diffbase_storage
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None


def test_only_event_handlers_are_registered() -> None:
    # What makes a diff-less storage right: no change handler and no daemon needs one.
    registry = registered()
    checkouts = kopf.Resource(GROUP, VERSION, PLURAL)
    assert registry._watching.has_handlers(resource=checkouts)
    assert not registry._changing.has_handlers(resource=checkouts)
    assert not registry._spawning.has_handlers(resource=checkouts)


async def test_kopf_keeps_no_memory_of_the_objects_it_relays() -> None:
    # kopf's default keeps a record per object until its deletion; ended Checkouts stay
    # an hour, and the relay (``@kopf.on.event``) needs nothing across events.
    memories = RelayOnlyMemories()
    raw = {"metadata": {"uid": "u-1", "name": "co-1", "namespace": "ns"}}
    first = await memories.recall(cast(bodies.RawBody, raw), noticed_by_listing=True)
    second = await memories.recall(cast(bodies.RawBody, raw))
    assert first is not second
    assert first.noticed_by_listing
    assert list(memories.iter_all_memories()) == []


def test_no_index_or_timer_needs_kopf_memory() -> None:
    registry = registered()
    checkouts = kopf.Resource(GROUP, VERSION, PLURAL)
    assert not registry._indexing.has_handlers(resource=checkouts)


def test_kopf_workers_do_not_keep_bodies_for_seconds() -> None:
    # Each object's worker keeps its last whole body while it idles; with kopf's 5 s a
    # restart's listing had every Checkout alive at once (15,015 ended: 323 MiB idle
    # after, 191 MiB with 0.1 s; docs/performance.md, "Session 9").
    assert kopf_settings().queueing.idle_timeout <= 0.5
