"""The one-time backfill of administration's streams: on a database upgraded from before
projects, service accounts and tokens were event-sourced, every row of theirs gets the
events that make it (`ProjectCreated`, `ServiceAccountCreated`, `TokenIssued` and, for a
revoked token, `TokenRevoked`), recorded with actor `migration` and the row's own creation
time and creator, so the fold equals the row and `replay verify` is clean. Run by the
migration that added the streams (`migrate.py`), in its transaction; finding nothing to do,
it appends nothing. The events go through the ordinary append, so they chain like any."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..domain.access import (
    SERVICE_ACCOUNT,
    ProjectCreated,
    ServiceAccountCreated,
    TokenIssued,
    TokenRevoked,
    project_stream,
)
from ..domain.events import Event, EventMeta
from .db import Conn
from .eventstore import AppendItem, EventStore
from .queries import load_queries

QUERIES = load_queries(Path(__file__).with_name("backfill.sql"))
#: Who the backfilled events say recorded them.
ACTOR = "migration"


async def backfill_access(conn: Conn) -> int:
    """Give every project, service account and token without a stream its events, in the
    caller's transaction. Returns the number of streams started."""
    items: list[AppendItem] = []

    def started(stream_id: Any, kind: str, *events: Event) -> None:
        items.append(AppendItem(stream_id, 0, list(events), stream_type=kind))

    for p in await conn.fetch(QUERIES["projects_without_stream"]):
        sid = project_stream(p["name"])
        started(sid, "project", ProjectCreated(
            name=p["name"], max_running_jobs=p["max_running_jobs"],
            log_limit_bytes=p["log_limit_bytes"], submit_rate=p["submit_rate"],
            submit_burst=p["submit_burst"], created_by=p["created_by"],
        ))  # fmt: skip
        await conn.execute(QUERIES["project_streamed"], p["name"], sid, ACTOR)
    for a in await conn.fetch(QUERIES["accounts_without_stream"]):
        sid = SERVICE_ACCOUNT.stream_id(a["project"], a["name"])
        started(sid, "service_account", ServiceAccountCreated(
            account_id=a["id"], project=a["project"], name=a["name"], role=a["role"],
            created_at=a["created_at"], created_by=a["created_by"],
        ))  # fmt: skip
        await conn.execute(QUERIES["account_streamed"], a["id"], sid)
    for t in await conn.fetch(QUERIES["tokens_without_stream"]):
        issued = TokenIssued(
            service_account_id=t["service_account_id"], project=t["project"],
            service_account=t["service_account"], description=t["description"],
            expires_at=t["expires_at"], created_at=t["created_at"], created_by=t["created_by"],
        )  # fmt: skip
        if t["revoked_at"] is None:
            started(t["id"], "token", issued)
        else:
            started(t["id"], "token", issued, TokenRevoked(revoked_at=t["revoked_at"]))
    if items:
        # The pool is never used: the append runs on the caller's connection.
        await EventStore(None).append_many(items, EventMeta(actor=ACTOR), conn=conn)  # type: ignore[arg-type]
    return len(items)
