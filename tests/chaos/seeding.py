"""Replayable randomness: one RNG per stream of choices, all derived from the run's seed."""

from __future__ import annotations

import random


def seeded(seed: int | float, stream: str) -> random.Random:
    """The RNG of ``stream``: concurrent loops never share one, so each replays alone."""
    return random.Random(f"{seed}:{stream}")  # noqa: S311 (test choices, not secrets)
