"""Admission: at most N POSTs at once, the next refused at once with Retry-After."""

from __future__ import annotations

import pytest

from checkout_api.admission import Admission
from checkout_api.limits import Refused


def test_the_place_after_the_limit_is_refused_and_freed_places_admit_again() -> None:
    admission = Admission(2)
    with admission.admit(), admission.admit():
        with pytest.raises(Refused) as refused, admission.admit():
            pass
        assert (refused.value.status, refused.value.reason) == (503, "Overloaded")
        assert refused.value.retry_after == 1
    assert admission.inside == 0 and admission.refused == 1
    with admission.admit():
        assert admission.inside == 1


def test_a_failing_request_gives_its_place_back() -> None:
    admission = Admission(1)
    with pytest.raises(RuntimeError), admission.admit():
        raise RuntimeError("the saga broke")
    with admission.admit():
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def serve(admission: Admission, clock: Clock, seconds: float) -> None:
    with admission.admit():
        clock.now += seconds


def test_slow_posts_lower_the_limit_down_to_its_floor() -> None:
    clock = Clock()
    admission = Admission(32, target_seconds=0.5, floor=8, clock=clock)
    serve(admission, clock, 2.0)  # an admitted buyer waited 2 s: too many places
    assert admission.limit == 28  # 32 * 0.9
    for _ in range(100):
        serve(admission, clock, 2.0)
    assert admission.limit == 8
    places = [admission.admit() for _ in range(8)]
    for place in places:
        place.__enter__()
    with pytest.raises(Refused), admission.admit():
        pass


def test_posts_admitted_before_a_cut_do_not_cut_again() -> None:
    # A burst of slow answers that were all admitted under the old limit is one signal.
    clock = Clock()
    admission = Admission(32, target_seconds=0.5, clock=clock)
    held = [admission.admit() for _ in range(10)]
    for place in held:
        place.__enter__()
    clock.now += 3.0
    for place in held:
        place.__exit__(None, None, None)
    assert admission.cuts == 1 and admission.limit == 28


def test_answers_in_time_restore_the_ceiling_while_the_places_are_used() -> None:
    clock = Clock()
    admission = Admission(32, target_seconds=0.5, floor=8, clock=clock)
    for _ in range(30):
        serve(admission, clock, 2.0)
    assert admission.limit == 8
    serve(admission, clock, 0.1)  # one place of 8 in use: no sign more would be needed
    assert admission.limit == 8
    held = []  # kept: a dropped generator would give its place back
    for _ in range(2000):  # a steady stream that keeps most places taken
        while admission.free() > 1:
            held.append(place := admission.admit())
            place.__enter__()
        serve(admission, clock, 0.1)
    assert admission.limit == 32  # never above the ceiling


def test_a_zero_target_keeps_the_limit_fixed() -> None:
    clock = Clock()
    admission = Admission(4, clock=clock)
    for _ in range(10):
        serve(admission, clock, 30.0)
    assert admission.limit == 4 and admission.cuts == 0


def test_a_floor_above_the_ceiling_is_refused() -> None:
    with pytest.raises(ValueError, match="floor"):
        Admission(4, floor=5)
