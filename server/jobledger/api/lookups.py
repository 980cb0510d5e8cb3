"""Reads that every request makes, batched across concurrent requests: while one query is
in flight the requests arriving meanwhile wait and share the next one. Nothing is cached:
each request's answer comes from a query that started after it arrived (a revoked token
is refused as soon as the revocation commits)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from ..batching import Batcher
from ..projections import queue
from ..projections.jobs import JobView
from ..projections.reads import JobReads
from ..store import access
from ..store.access import AccessStore


class Lookups:
    """Token checks and queue facts for the API, one query per batch of requests."""

    def __init__(self, access_store: AccessStore, reads: JobReads) -> None:
        self.access = access_store
        self.reads = reads
        self._principals: Batcher[str, access.Principal | None] = Batcher(self._authenticate)
        self._facts: Batcher[frozenset[str], queue.QueueFacts] = Batcher(self._queue_facts)
        self._projects: Batcher[str, bool] = Batcher(self._project_exists)
        #: Projects known to exist: none is ever deleted, so once seen, always true.
        self._known_projects: set[str] = set()

    async def principal(self, token: str) -> access.Principal | None:
        """The principal a token stands for (None: unknown, expired or revoked), batched."""
        return await self._principals(token)

    async def project_exists(self, name: str) -> bool:
        """Whether a project exists; batched, and asked once per project that does."""
        if name in self._known_projects:
            return True
        exists = await self._projects(name)
        if exists:
            self._known_projects.add(name)
        return exists

    async def waiting_reasons(self, views: Sequence[JobView]) -> dict[uuid.UUID, str]:
        """`queue.waiting_reasons`, with the facts batched."""
        projects = queue.projects_waiting(views)
        if not projects:
            return {}
        return queue.reasons(await self._facts(frozenset(projects)), views)

    async def _authenticate(self, tokens: list[str]) -> list[access.Principal | None]:
        return await self.access.authenticate_many(tokens)

    async def _project_exists(self, names: list[str]) -> list[bool]:
        found = await self.access.existing_projects(sorted(set(names)))
        return [n in found for n in names]

    async def _queue_facts(self, wanted: list[frozenset[str]]) -> list[queue.QueueFacts]:
        facts = await self.reads.queue_facts(frozenset().union(*wanted))
        return [facts] * len(wanted)
