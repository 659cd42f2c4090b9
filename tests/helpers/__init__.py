"""Reusable test helpers (processes, ports) shared by unit and integration tests."""
