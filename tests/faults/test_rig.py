"""The fault rig does what the fault tests rely on."""

from __future__ import annotations

import asyncpg
import pytest

from jobledger.store.db import DB_ERRORS
from tests.faults.conftest import OwnPostgres

#: What a cut connection raises (asyncpg says it several ways, InternalClientError too).
CUT = DB_ERRORS


async def test_a_restart_cuts_connections_and_keeps_data(own_pg: OwnPostgres) -> None:
    conn = await asyncpg.connect(own_pg.dsn)
    await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
    await own_pg.restart()
    with pytest.raises(CUT):
        await conn.fetchval("SELECT 1")
    again = await asyncpg.connect(own_pg.dsn)
    try:
        assert await again.fetchval("SELECT n FROM kept") == 7
    finally:
        await again.close()


async def test_terminate_cuts_only_the_named_application(own_pg: OwnPostgres) -> None:
    victim = await asyncpg.connect(own_pg.dsn, server_settings={"application_name": "victim"})
    bystander = await asyncpg.connect(own_pg.dsn)
    try:
        assert await own_pg.terminate("victim") == 1
        with pytest.raises(CUT):
            await victim.fetchval("SELECT 1")
        assert await bystander.fetchval("SELECT 1") == 1
    finally:
        await bystander.close()
        victim.terminate()
