"""Live logs across processes: an API-only `serve` streams the output of a container that a
separate `jobledger worker` runs, while it runs."""

from __future__ import annotations

import json

import aiohttp
import asyncpg

from tests.e2e.conftest import AUTH, Server, Worker


async def test_api_process_streams_a_worker_process_job_live(
    dsn: str, pool: asyncpg.Pool, workers: list[Worker], test_image: str
) -> None:
    api = Server("--database-url", dsn, "--no-scheduler")
    workers.append(Worker(dsn, "streamer", "--executor", "docker"))
    script = "for i in 1 2 3 4 5; do echo line $i; sleep 0.4; done; echo bye >&2"
    try:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            body = {"image": test_image, "command": ["sh", "-c", script]}
            async with http.post(f"{api.url}/api/v1/jobs", json=body) as r:
                job = await r.json()
            ws_url = api.url.replace("http", "ws", 1) + f"/api/v1/jobs/{job['id']}/logs/ws"
            received: list[tuple[str, str]] = []
            states_at_arrival: list[str] = []
            async with http.ws_connect(ws_url) as ws:
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data["type"] == "end":
                        end = data
                        break
                    received += [(ln["stream"], ln["text"]) for ln in data["lines"]]
                    states_at_arrival.append(
                        await pool.fetchval("SELECT state FROM jobs WHERE id = $1::uuid", job["id"])
                    )
    finally:
        assert api.stop() == 0
    assert received == [("stdout", f"line {i}") for i in range(1, 6)] + [("stderr", "bye")]
    assert end["state"] == "succeeded" and end["last_seq"] == 6
    assert states_at_arrival[0] == "running"  # the first lines came while the job still ran
