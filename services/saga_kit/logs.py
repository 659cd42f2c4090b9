"""Structured (one JSON object per line) logging for every process.

A filter masks anything that looks like a credential (bearer tokens, DSN
passwords, Basic auth) before a record is written, as a second line of defence:
the first is never passing secrets to a logger at all.

Work done for one checkout runs inside :func:`about_order`, so every line it logs
carries the order id as its own field (``"order_id"``): a log search finds a
checkout's whole story without parsing messages. ``LOG_FORMAT=text`` prints plain
lines for a person at a terminal; ``LOG_LEVEL`` sets the level (default INFO).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
from collections.abc import Iterator

_PATTERNS = [
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"(Basic\s+)[A-Za-z0-9+/=]+"), r"\1***"),
    (re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@"), r"\1***@"),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_ORDER: contextvars.ContextVar[str | None] = contextvars.ContextVar("order_id", default=None)


@contextlib.contextmanager
def about_order(order_id: str) -> Iterator[None]:
    """Lines logged inside carry ``order_id`` (tasks started inside inherit it)."""
    token = _ORDER.set(order_id)
    try:
        yield
    finally:
        _ORDER.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if (order := _ORDER.get()) is not None:
            entry["order_id"] = order
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """One plain line per record, for a person at a terminal (``LOG_FORMAT=text``)."""

    def format(self, record: logging.LogRecord) -> str:
        order = _ORDER.get()
        about = f" [{order}]" if order else ""
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}{about}: "
        line += redact(record.getMessage())
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


LOG_FORMATS = ("json", "text")


def setup_logging(service: str, level: str | None = None) -> None:
    """JSON lines on stdout (``LOG_FORMAT=text`` for plain lines) at ``level`` or
    ``LOG_LEVEL`` (default INFO); an unknown format or level stops the start."""
    chosen = (os.environ.get("LOG_FORMAT") or "json").lower()
    if chosen not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be json or text, got {chosen!r}")
    level = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError(f"LOG_LEVEL must be a logging level name, got {level!r}")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service) if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
