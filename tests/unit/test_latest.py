"""The operator's bounded memories keep the latest entries and drop the oldest."""

from __future__ import annotations

from checkout_operator.latest import Latest


def test_the_oldest_is_dropped_and_a_renewed_entry_counts_as_new() -> None:
    memory: Latest[str, int] = Latest(2)
    memory.put("a", 1)
    memory.put("b", 2)
    memory.put("a", 3)  # renewed: now the newest
    memory.put("c", 4)
    assert "b" not in memory and len(memory) == 2
    assert memory.get("a") == 3 and memory.get("c") == 4 and memory.get("b") is None


def test_take_answers_once() -> None:
    memory: Latest[str, None] = Latest(4)
    memory.put("u1", None)
    assert memory.take("u1") is True
    assert memory.take("u1") is False and "u1" not in memory
