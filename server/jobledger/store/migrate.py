"""Versioned schema migrations.

A fresh (empty) database is created from schema.sql, the whole current schema, which
records the version it stands for. An existing database goes from its version to the
latest through the numbered files in migrations/ (`0002_events_stream_type.sql` takes
version 1 to 2), each applied once, in order, in its own transaction, and recorded in
schema_migrations. A database without that table but with the events table predates
versioning: it is version 1, and gets the (idempotent) baseline once more to be stamped so.

All of it happens under one session advisory lock, so processes that start at once take
turns. On an up-to-date database that lock and a read of schema_migrations are all a start
takes: it never waits for a long reader of the tables, nor makes their other users wait.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .backfill import backfill_access
from .db import Conn
from .queries import load_queries

# Arbitrary constant naming "the schema migration" among advisory locks. Unchanged since
# migrate took it per transaction, so an older process starting alongside takes turns too.
_MIGRATION_LOCK = 0x6A6C_6D69  # "jlmi"
_MIGRATION_FILE = re.compile(r"^(\d{4})_\w+\.sql$")
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
QUERIES = load_queries(Path(__file__).with_name("migrate.sql"))


#: Python steps of some migrations, run after the file in its transaction, by the file's
#: name without its number (numbers change when branches merge): data the SQL cannot make.
DATA_STEPS: dict[str, Callable[[Conn], Awaitable[object]]] = {
    "administration_streams": backfill_access,
}


class SchemaError(RuntimeError):
    """The database's schema cannot be brought up to date by this version of jobledger."""


@dataclass(frozen=True)
class Migration:
    """One numbered file: takes a database from `version - 1` to `version`."""

    version: int
    #: The file's name without `.sql`, as schema_migrations records it.
    name: str
    path: Path


@dataclass(frozen=True)
class MigrationResult:
    """What a `migrate` did: the version before (0: none recorded) and after, and the
    files applied (`schema.sql` for a database created fresh; none when up to date)."""

    from_version: int
    to_version: int
    applied: tuple[str, ...]

    def __str__(self) -> str:
        if not self.applied:
            return f"schema is up to date (version {self.to_version})"
        return (
            f"schema is up to date (version {self.to_version}, was "
            f"{self.from_version or 'none'}; applied {', '.join(self.applied)})"
        )


def schema_path() -> Path:
    """schema.sql: packaged next to the code in a wheel, at the repository root in a checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "schema.sql", here.parent.parent / "schema.sql"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("schema.sql not found next to the package or at the repository root")


@cache
def migrations() -> tuple[Migration, ...]:
    """The numbered migrations in order; their numbers run 1, 2, 3... without a gap."""
    found = sorted(
        (
            Migration(int(m[1]), p.stem, p)
            for p in MIGRATIONS_DIR.iterdir()
            if (m := _MIGRATION_FILE.match(p.name))
        ),
        key=lambda m: m.version,
    )
    numbers = [m.version for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise SchemaError(f"migrations in {MIGRATIONS_DIR} must be numbered 1, 2, ...: {numbers}")
    return tuple(found)


def latest_version() -> int:
    """The version schema.sql stands for: the last migration's."""
    return migrations()[-1].version


async def migrate(conn: Conn) -> MigrationResult:
    """Bring the database's schema up to date; safe to run any number of times, and from
    several processes at once."""
    # A session lock, not a transaction's: it spans the migrations' own transactions.
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        return await _migrate_locked(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)


async def _migrate_locked(conn: Conn) -> MigrationResult:
    latest = latest_version()
    if await conn.fetchval(QUERIES["has_schema_migrations"]):
        version: int = await conn.fetchval(QUERIES["schema_version"])
        if version > latest:
            raise SchemaError(
                f"the database's schema is version {version}, newer than this jobledger "
                f"knows (up to {latest}): upgrade jobledger"
            )
    elif await conn.fetchval(QUERIES["has_events"]):
        version = 0  # from before versioning: the baseline is applied again and stamps it 1
    else:
        return await _create(conn, latest)
    pending = migrations()[version:]
    for migration in pending:
        async with conn.transaction():
            if migration.version == 1:
                await conn.execute(QUERIES["create_schema_migrations"])
            await conn.execute(migration.path.read_text())
            step = DATA_STEPS.get(migration.name.partition("_")[2])
            if step is not None:
                await step(conn)
            await conn.execute(QUERIES["record_migration"], migration.version, migration.name)
    return MigrationResult(version, latest, tuple(m.name for m in pending))


async def _create(conn: Conn, latest: int) -> MigrationResult:
    """An empty database: schema.sql in one transaction."""
    async with conn.transaction():
        await conn.execute(schema_path().read_text())
        created: int = await conn.fetchval(QUERIES["schema_version"])
        if created != latest:
            raise SchemaError(
                f"schema.sql records version {created}, but the last migration is {latest}: "
                "a migration was added without updating schema.sql"
            )
    return MigrationResult(0, latest, ("schema.sql",))
