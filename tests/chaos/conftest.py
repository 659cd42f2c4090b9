"""The chaos suite's system: a private platform with the apps on it (see platform.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from saga_devenv.config import DevConfig
from tests.chaos.platform import private_system


@pytest.fixture(scope="module")
def chaos_platform() -> Iterator[DevConfig]:
    with private_system() as cfg:
        yield cfg
