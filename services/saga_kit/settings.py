"""Reading configuration and secrets from the environment.

A secret can be given directly (``NAME``) or as a file (``NAME_FILE``), the way a
Kubernetes Secret is usually mounted. :class:`Secret` keeps the value out of
``repr``/``str`` so it cannot leak into a log line by accident.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class ConfigError(RuntimeError):
    """A required setting is missing or malformed."""


@dataclass(frozen=True)
class Secret:
    """A secret value that never prints itself."""

    value: str

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise ConfigError(f"environment variable {name} is required")
    return value


def env_optional(name: str) -> str:
    """A setting whose absence means "none" (an empty string)."""
    return os.environ.get(name, "").strip()


def env_service_tokens(name: str = "SERVICE_TOKENS") -> tuple[Secret, ...]:
    """``a,b,c`` -> three accepted service tokens (several allow rotation); the first
    is the one this process presents when it calls another service."""
    raw = env_secret(name)
    tokens = tuple(Secret(t.strip()) for t in raw.value.split(",") if t.strip())
    if not tokens:
        raise ConfigError(f"{name} must list at least one non-empty token")
    return tokens


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def env_secret(name: str, default: str | None = None) -> Secret:
    """``NAME`` or the content of the file named by ``NAME_FILE``."""
    file = os.environ.get(f"{name}_FILE")
    if file:
        try:
            return Secret(Path(file).read_text().strip())
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={file} cannot be read: {exc.strerror}") from exc
    return Secret(env_str(name, default))
