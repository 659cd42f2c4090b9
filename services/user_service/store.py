"""Users in Postgres (asyncpg), in the service's own schema.

Duplicates are decided by the unique constraints of ``0001_users.sql``, not by a
look-up before the insert: two concurrent registrations of one name both pass
any look-up, but only one insert can succeed. The constraint that refused the
other tells which error to give.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import redis.exceptions

from .domain import NewUser, StoredCredentials, User, email_taken, username_taken

# A store or Redis outage is the server's problem and worth a retry (HTTP 503, gRPC
# UNAVAILABLE), never "unauthenticated", which would log a user out because Redis blinked.
OUTAGES = (redis.exceptions.RedisError, asyncpg.PostgresConnectionError, OSError)

_USER_COLUMNS = "id, username, email, created_at"

_CONFLICTS = {
    "users_username_key": username_taken,
    "users_email_key": email_taken,
}


def _user(row: Any) -> User:
    return User(
        id=row["id"], username=row["username"], email=row["email"], created_at=row["created_at"]
    )


def _credentials(row: Any) -> StoredCredentials:
    return StoredCredentials(user=_user(row), password_hash=row["password_hash"])


class PgUserStore:
    """:class:`user_service.domain.UserStore` on an asyncpg pool."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def insert(self, new: NewUser) -> User:
        try:
            row = await self._pool.fetchrow(
                "INSERT INTO users (id, username, email, password_hash) VALUES ($1, $2, $3, $4)"
                f" RETURNING {_USER_COLUMNS}",
                new.id,
                new.username,
                new.email,
                new.password_hash,
            )
        except asyncpg.UniqueViolationError as exc:
            conflict = _CONFLICTS.get(exc.constraint_name or "")
            if conflict is None:  # the primary key: a uuid4 collision, not the caller's fault
                raise
            raise conflict() from exc
        return _user(row)

    async def get(self, user_id: str) -> User | None:
        row = await self._pool.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
        return None if row is None else _user(row)

    async def credentials_by_username(self, username: str) -> StoredCredentials | None:
        row = await self._pool.fetchrow(
            f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE username = $1", username
        )
        return None if row is None else _credentials(row)

    async def credentials_by_email(self, email: str) -> StoredCredentials | None:
        row = await self._pool.fetchrow(
            f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE email = $1", email
        )
        return None if row is None else _credentials(row)

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")
