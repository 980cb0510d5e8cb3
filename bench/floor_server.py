"""The bare aiohttp app of bench/floors.py: what the API server's stack costs before
jobledger's own code. `python floor_server.py DSN PORT`; prints `ready` once it listens.

- POST /echo: read the body, decode it with msgspec, answer 201 with a small JSON body.
- POST /insert: the same, plus one INSERT of the body into `floor` (autocommit: one round
  trip), on an asyncpg pool that, like jobledger's, resets nothing on release.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

import asyncpg
import msgspec
from aiohttp import web


async def main(dsn: str, port: int) -> None:
    async def no_reset(conn: asyncpg.Connection) -> None:
        return None  # as jobledger's pool: no session state to reset, no round trip for it

    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=2, reset=no_reset)
    assert pool is not None

    async def echo(request: web.Request) -> web.Response:
        msgspec.json.decode(await request.read())
        body = msgspec.json.encode({"id": str(uuid.uuid4()), "state": "queued"})
        return web.Response(body=body, status=201, content_type="application/json")

    async def insert(request: web.Request) -> web.Response:
        raw = await request.read()
        msgspec.json.decode(raw)
        job_id = uuid.uuid4()
        sql = "INSERT INTO floor (id, spec) VALUES ($1, $2::jsonb)"
        await pool.execute(sql, job_id, raw.decode())
        body = msgspec.json.encode({"id": str(job_id), "state": "queued"})
        return web.Response(body=body, status=201, content_type="application/json")

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_post("/insert", insert)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
