"""The project's Postgres pool (``saga_kit.db.create_pool``) against the real server."""

from __future__ import annotations

import asyncpg

from saga_kit import db
from tests.conftest import Platform


async def test_a_released_connection_costs_no_reset_round_trip(
    platform: Platform, db_schema: str
) -> None:
    """asyncpg's default reset sends four statements on every release; ours sends none,
    and leaves nothing of a transaction behind."""
    pool = await db.create_pool(platform.postgres_dsn, db_schema, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '1s'")
                await conn.execute("SELECT pg_advisory_xact_lock(42)")
        last = await last_query(platform, pid)  # while it waits in the pool
        assert "RESET" not in last.upper() and "UNLISTEN" not in last.upper(), last
        async with pool.acquire() as again:
            assert await again.fetchval("SELECT pg_backend_pid()") == pid  # the same one
            assert await again.fetchval("SHOW lock_timeout") == "0"  # the LOCAL one went
            locks = await again.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid
            )
            assert locks == 0
            assert await again.fetchval("SHOW search_path") == db_schema
    finally:
        await pool.close()


async def last_query(platform: Platform, pid: int) -> str:
    """The last statement the backend ``pid`` ran, as Postgres shows it to another session."""
    conn = await asyncpg.connect(platform.postgres_dsn)
    try:
        return str(await conn.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid))
    finally:
        await conn.close()
