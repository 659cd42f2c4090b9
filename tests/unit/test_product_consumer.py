"""What the Product consumer makes of a message, and how long it waits to retry."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from product_service.consumer import MAX_RETRY, Unreadable, read_event, retry_delay
from saga_kit.events import EventType, Topology, TransactionEvent

TOPOLOGY = Topology.namespaced("unit")
SUBJECTS = st.sampled_from([TOPOLOGY.subject(kind) for kind in EventType])


@given(SUBJECTS, st.binary(max_size=2000))
def test_any_bytes_are_an_event_or_a_reason_never_an_error(subject: str, data: bytes) -> None:
    read = read_event(TOPOLOGY, subject, data)
    assert isinstance(read, TransactionEvent | Unreadable)
    if isinstance(read, Unreadable):
        assert read.reason


@given(SUBJECTS, st.recursive(st.none() | st.integers() | st.text(), st.lists, max_leaves=50))
def test_json_that_is_no_event_object_is_unreadable(subject: str, value: object) -> None:
    assert isinstance(read_event(TOPOLOGY, subject, json.dumps(value).encode()), Unreadable)


def test_deep_nesting_and_broken_utf8_are_unreadable() -> None:
    subject = TOPOLOGY.subject(EventType.SETTLED)
    for data in (b"[" * 1000 + b"]" * 1000, b'{"transaction_id": "\xff", "type": "settled"}'):
        assert isinstance(read_event(TOPOLOGY, subject, data), Unreadable)


@given(st.sampled_from(list(EventType)), st.sampled_from(list(EventType)))
def test_an_event_is_read_only_on_its_own_subject(kind: EventType, on: EventType) -> None:
    data = TransactionEvent(transaction_id="order-1", type=kind).model_dump_json().encode()
    read = read_event(TOPOLOGY, TOPOLOGY.subject(on), data)
    assert isinstance(read, TransactionEvent) == (kind == on)


@given(st.integers(min_value=1, max_value=10**6), st.floats(min_value=0.001, max_value=10))
def test_retries_grow_and_are_capped(delivered: int, scale: float) -> None:
    delay = retry_delay(delivered, scale)
    assert 0 < delay <= MAX_RETRY * scale
    assert retry_delay(delivered + 1, scale) >= delay


def test_a_long_outage_is_retried_about_once_a_minute() -> None:
    assert [retry_delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
