"""Where the sandbox keeps its orders: SQLite, one row per order.

Midtrans never forgets an order, so neither may its stand-in: a restarted sandbox must still
answer the status API for every order it ever took, refuse a reused order_id, expire the
pending ones whose deadline passed meanwhile and go on delivering the notifications it had
not delivered. Without a file the rows live in memory and die with the process (tests).

SQLite (the standard library's) rather than the project's Postgres: the sandbox stands in
for an outside service, and its writes must not count as the system's own database work.
Each row holds the whole order as JSON plus the few columns a restart searches by. Calls are
synchronous and short (no fsync per commit: WAL with ``synchronous=NORMAL`` survives a killed
process, which is all a development sandbox needs).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from datetime import datetime
from typing import Any

from midtrans_sandbox.model import Attempt, Notification, Transaction
from midtrans_sandbox.settings import IN_MEMORY

# Deliveries a restart resumes; delivered, failed and unsent ones are history.
UNDELIVERED = ("queued", "retrying")

SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    order_id TEXT PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    -- 1 while the order still waits for its deadline (the expiry task must look at it)
    open INTEGER NOT NULL,
    -- 1 while one of its notifications is queued or being retried
    undelivered INTEGER NOT NULL,
    last_notification_id INTEGER NOT NULL,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS transactions_resume ON transactions (order_id)
    WHERE open = 1 OR undelivered = 1;
CREATE INDEX IF NOT EXISTS transactions_last_notification
    ON transactions (last_notification_id);
"""
# The row format's version (PRAGMA user_version): a file of another one is refused.
FORMAT = 1


@dataclass(frozen=True)
class Resumed:
    """What a restart picks up: orders still open or undelivered, and the id counter."""

    transactions: list[Transaction]
    last_notification_id: int


class SandboxStore:
    """The sandbox's orders on disk (``path``) or in memory (``":memory:"``)."""

    def __init__(self, path: str = IN_MEMORY) -> None:
        """Raises ValueError (naming the file) when it cannot be opened or is of another
        format."""
        try:
            # One event loop uses it, but tests may drive the app from another thread.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            if path != IN_MEMORY:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version not in (0, FORMAT):
                raise ValueError(f"it holds orders in format {version}, not {FORMAT}")
            self._db.executescript(SCHEMA)
            self._db.execute(f"PRAGMA user_version = {FORMAT}")
        except (sqlite3.Error, ValueError) as exc:
            raise ValueError(f"MIDTRANS_SANDBOX_STATE_FILE {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def save(
        self, transactions: list[Transaction], *, is_open: Callable[[Transaction], bool]
    ) -> None:
        """Write these orders in one transaction; ``is_open(tx)`` fills the ``open`` column."""
        rows = [
            (
                tx.order_id,
                tx.token,
                int(is_open(tx)),
                int(any(n.state in UNDELIVERED for n in tx.notifications)),
                max((n.id for n in tx.notifications), default=0),
                encode_transaction(tx),
            )
            for tx in transactions
        ]
        with self._db:  # BEGIN ... COMMIT
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO transactions "
                "(order_id, token, open, undelivered, last_notification_id, doc) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def load(self, order_id: str) -> Transaction | None:
        row = self._db.execute(
            "SELECT doc FROM transactions WHERE order_id = ?", (order_id,)
        ).fetchone()
        return None if row is None else decode_transaction(row[0])

    def order_for_token(self, token: str) -> str | None:
        row = self._db.execute(
            "SELECT order_id FROM transactions WHERE token = ?", (token,)
        ).fetchone()
        return None if row is None else str(row[0])

    def resume(self) -> Resumed:
        rows = self._db.execute(
            "SELECT doc FROM transactions WHERE open = 1 OR undelivered = 1 ORDER BY order_id"
        ).fetchall()
        (last,) = self._db.execute(
            "SELECT coalesce(max(last_notification_id), 0) FROM transactions"
        ).fetchone()
        return Resumed([decode_transaction(doc) for (doc,) in rows], int(last))


# --- the JSON form of an order (not a Midtrans format: the sandbox's own) ----------------
# Every field as it is, times as ISO text: a new field is kept too. (The dataclasses' own
# dicts, not dataclasses.asdict, which deep-copies first: 174 -> 24 us for a paid order.)


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value):
        return vars(value)
    raise TypeError(f"cannot store {type(value).__name__}")


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def encode_transaction(tx: Transaction) -> str:
    return json.dumps(tx, default=_json_default, separators=(",", ":"))


def decode_transaction(text: str) -> Transaction:
    doc = json.loads(text)
    return Transaction(
        **{
            **doc,
            "created_at": datetime.fromisoformat(doc["created_at"]),
            "expires_at": datetime.fromisoformat(doc["expires_at"]),
            "transaction_time": _time(doc["transaction_time"]),
            "settlement_time": _time(doc["settlement_time"]),
            "notification_urls": tuple(doc["notification_urls"]),
            "notifications": [_decode_notification(n) for n in doc["notifications"]],
        }
    )


def _decode_notification(doc: dict[str, Any]) -> Notification:
    attempts = [
        Attempt(
            **{
                **a,
                "at": datetime.fromisoformat(a["at"]),
                "finished_at": _time(a["finished_at"]),
            }
        )
        for a in doc["attempts"]
    ]
    return Notification(
        **{**doc, "created_at": datetime.fromisoformat(doc["created_at"]), "attempts": attempts}
    )
