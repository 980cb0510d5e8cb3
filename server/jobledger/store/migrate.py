"""Applies schema.sql. The file is written to be idempotent; an advisory lock keeps two
processes that start at once from applying it concurrently."""

from __future__ import annotations

from pathlib import Path

from .db import Conn

# Arbitrary constant naming "the schema migration" among advisory locks.
_MIGRATION_LOCK = 0x6A6C_6D69  # "jlmi"


def schema_path() -> Path:
    """schema.sql: packaged next to the code in a wheel, at the repository root in a checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "schema.sql", here.parent.parent / "schema.sql"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("schema.sql not found next to the package or at the repository root")


async def migrate(conn: Conn) -> None:
    """Bring the database's schema up to date; safe to run any number of times."""
    sql = schema_path().read_text()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(sql)
