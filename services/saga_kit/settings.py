"""Reading configuration and secrets from the environment.

A secret can be given directly (``NAME``) or as a file (``NAME_FILE``), the way a
Kubernetes Secret is usually mounted. :class:`Secret` keeps the value out of
``repr``/``str`` so it cannot leak into a log line by accident.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

NATS_SCHEMES = ("nats", "tls")
REDIS_SCHEMES = ("redis", "rediss", "unix")


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


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


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
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    return value


def env_port(name: str, default: int) -> int:
    """A TCP port to listen on (1..65535)."""
    port = env_int(name, default)
    if problem := port_problem(port):
        raise ConfigError(f"{name} {problem}")
    return port


def env_url(name: str, default: str, schemes: tuple[str, ...]) -> str:
    """A URL of one of ``schemes`` with a host (and a valid port if one is given)."""
    url = env_str(name, default)
    if problem := url_problem(url, schemes):
        raise ConfigError(f"{name}: {problem}")
    return url


def env_secret_url(name: str, default: str | None, schemes: tuple[str, ...]) -> Secret:
    """:func:`env_url` for a URL that may hold a password (``NAME`` or ``NAME_FILE``)."""
    url = env_secret(name, default)
    if problem := url_problem(url.value, schemes):
        raise ConfigError(f"{name}: {problem}")
    return url


def env_target(name: str, default: str) -> str:
    """A gRPC target ``host:port``."""
    target = env_str(name, default)
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or port_problem(int(port)):
        raise ConfigError(f"{name} must be host:port, got {target!r}")
    return target


def env_positive(name: str, default: float) -> float:
    value = env_float(name, default)
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    return value


def url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    """Why ``url`` is not a usable URL of one of these schemes (None: it is)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when out of range or not a number
    except ValueError as exc:
        return f"{url.split('@')[-1]!r} is not a valid URL ({exc})"
    shown = url.split("@")[-1]  # never echo credentials
    if parts.scheme not in schemes:
        return f"{shown!r} must start with {' or '.join(s + '://' for s in schemes)}"
    if not parts.hostname and parts.scheme != "unix":
        return f"{shown!r} names no host"
    if port == 0:
        return f"{shown!r} has port 0"
    return None


def port_problem(port: int, *, off_allowed: bool = False) -> str | None:
    low = 0 if off_allowed else 1
    if not low <= port <= 65535:
        return f"must be a port {low}..65535, got {port}"
    return None


def env_secret(name: str, default: str | None = None) -> Secret:
    """``NAME`` or the content of the file named by ``NAME_FILE``."""
    file = os.environ.get(f"{name}_FILE")
    if file:
        try:
            return Secret(Path(file).read_text().strip())
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={file} cannot be read: {exc.strerror}") from exc
    return Secret(env_str(name, default))
