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
