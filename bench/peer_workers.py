"""The peers' consumers for bench/peers.py, each as its users run one, in a process of its
own (so its CPU is measured apart from the load generator's):

    python -c 'import sys, peer_workers; peer_workers.main(sys.argv[1:])' SYSTEM DSN

(SYSTEM: pgqueuer or procrastinate; imported rather than run as a script, so that
procrastinate finds its App in a named module.)

It sets up (imports, connection, entrypoint or task), prints `ready`, waits for a line on
stdin, then works until it is killed. No-op jobs, 10 at a time.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

#: What the consumers run: the peers' drain jobs (`noop`), apart from the jobs the submit
#: workloads leave queued (`held`: no consumer takes them, as jobledger's far-off ones).
DRAIN, HELD = "noop", "held"
SLOTS = 10


def procrastinate_app(dsn: str) -> tuple[Any, Any, Any]:
    """A procrastinate App on psycopg (its default connector) and its two tasks, `held` and
    `noop`, each in the queue of its name."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name=HELD, queue=HELD)
    async def held() -> None:
        return None

    @app.task(name=DRAIN, queue=DRAIN)
    async def noop() -> None:
        return None

    return app, held, noop


async def go() -> None:
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)


async def pgqueuer(dsn: str) -> None:
    import asyncpg
    from pgqueuer import Job, PgQueuer

    pgq = PgQueuer.from_asyncpg_connection(await asyncpg.connect(dsn))

    @pgq.entrypoint(DRAIN)
    async def noop(job: Job) -> None:
        return None

    await go()
    # Ten slots is PgQueuer's per-worker cap, `max_concurrent_tasks`, which wants at least
    # twice the batch size. (An entrypoint's `concurrency_limit` is a limit across all
    # workers, counted by every dequeue: with it, this consumer drained 2-3x slower.)
    await pgq.run(batch_size=SLOTS // 2, max_concurrent_tasks=SLOTS)


async def procrastinate(dsn: str) -> None:
    app, _, _ = procrastinate_app(dsn)
    async with app.open_async():
        await go()
        await app.run_worker_async(queues=[DRAIN], concurrency=SLOTS)


def main(argv: list[str]) -> None:
    system, dsn = argv
    asyncio.run({"pgqueuer": pgqueuer, "procrastinate": procrastinate}[system](dsn))


if __name__ == "__main__":
    main(sys.argv[1:])
