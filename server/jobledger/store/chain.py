"""The per-stream hash chain, computed the way the database's `events_chain` trigger does
(schema.sql), so a verifier can recompute it without trusting that trigger.

hash(event) = SHA-256(hash(previous event in the stream, or empty) || canonical(event)),
where canonical(event) is its event id, stream id, version, type, schema version, recorded
time (microseconds since the epoch), data and metadata (PostgreSQL's jsonb text) and, for a
stream of another kind than `job`, the kind, joined by newlines and encoded as UTF-8. (Job
events were chained before the log had kinds; their bytes stay as they were.)
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def canonical(
    *,
    event_id: uuid.UUID,
    stream_id: uuid.UUID,
    version: int,
    type: str,
    schema_version: int,
    recorded_at: datetime,
    data: str,
    meta: str,
    stream_type: str = "job",
) -> bytes:
    """The bytes an event's hash covers; `data` and `meta` as the jsonb text the database
    returns for them."""
    micros = (recorded_at - _EPOCH) // _MICROSECOND
    fields = [event_id, stream_id, version, type, schema_version, micros, data, meta]
    if stream_type != "job":
        fields.append(stream_type)
    return "\n".join(str(f) for f in fields).encode()


def link(previous: bytes | None, canonical_bytes: bytes) -> bytes:
    """An event's hash from its predecessor's (None for a stream's first event)."""
    return hashlib.sha256((previous or b"") + canonical_bytes).digest()
