"""Fixtures shared by the integration tests (the platform ones live in tests/conftest.py)."""

from tests.integration.product_fixtures import product_env

__all__ = ["product_env"]
