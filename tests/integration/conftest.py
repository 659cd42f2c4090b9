"""Fixtures shared by the integration tests (the platform ones live in tests/conftest.py)."""

from tests.integration.product_fixtures import product_env
from tests.integration.saga_fixtures import midtrans_sandbox, saga
from tests.integration.user_fixtures import user_env

__all__ = ["midtrans_sandbox", "product_env", "saga", "user_env"]
