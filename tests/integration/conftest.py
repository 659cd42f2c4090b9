"""Fixtures shared by the integration tests (the platform ones live in tests/conftest.py)."""

from tests.integration.product_fixtures import product_env
from tests.integration.user_fixtures import user_env

__all__ = ["product_env", "user_env"]
