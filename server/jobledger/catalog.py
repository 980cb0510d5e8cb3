"""Definitions and environments: saving, disabling, deleting and reading them (each change an
event of their own named streams), and submitting a job by reference to a definition: the
spec is resolved here and goes through `JobService`'s submit like any other."""

from __future__ import annotations

import uuid

import asyncpg
import msgspec

from .domain.definitions import (
    DEFINITION,
    ENVIRONMENT,
    Definition,
    DeleteDefinition,
    DeleteEnvironment,
    DisableDefinition,
    EnableDefinition,
    Environment,
    SaveDefinition,
    SaveEnvironment,
    refuse_disabled,
)
from .domain.errors import IdempotencyConflict, NotFound
from .domain.events import EventMeta
from .domain.jobs import Submit
from .domain.templates import (
    DefinitionSpec,
    DefinitionSubmit,
    EnvironmentSpec,
    FromDefinition,
    resolve,
)
from .projections import jobs as jobs_projection
from .projections import queue
from .service import JobService, Submitted, same_request
from .wire import DefinitionSummary, EnvironmentSummary


class Catalog:
    """Commands on and reads of definitions and environments, and submits by reference."""

    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self.streams = jobs.streams
        self.pool: asyncpg.Pool = jobs.pool

    # ---- definitions ----------------------------------------------------------------------

    async def definition(self, project: str, name: str) -> Definition:
        """A definition folded from its stream, every version; `NotFound` if none (deleted)."""
        state, _ = await self.streams.load(DEFINITION.name, DEFINITION.stream_id(project, name))
        if state is None or state.deleted:
            raise NotFound(f"no definition {name!r} in project {project}", definition=name)
        return state  # type: ignore[no-any-return]

    async def save_definition(
        self, project: str, name: str, content: DefinitionSpec, meta: EventMeta
    ) -> tuple[Definition, bool]:
        """Record a new version (nothing if the content is the current one's); the definition
        and whether this created it (it did not exist, or was deleted)."""
        sid = DEFINITION.stream_id(project, name)
        prior, _ = await self.streams.load(DEFINITION.name, sid)
        state = await self.streams.execute(
            DEFINITION.name, sid, SaveDefinition(project=project, name=name, content=content), meta
        )
        return state, prior is None or prior.deleted

    async def disable_definition(
        self, project: str, name: str, reason: str | None, meta: EventMeta
    ) -> Definition:
        return await self._definition_command(project, name, DisableDefinition(reason=reason), meta)

    async def enable_definition(self, project: str, name: str, meta: EventMeta) -> Definition:
        return await self._definition_command(project, name, EnableDefinition(), meta)

    async def delete_definition(self, project: str, name: str, meta: EventMeta) -> Definition:
        return await self._definition_command(project, name, DeleteDefinition(), meta)

    async def _definition_command(
        self, project: str, name: str, command: object, meta: EventMeta
    ) -> Definition:
        try:
            state: Definition = await self.streams.execute(
                DEFINITION.name, DEFINITION.stream_id(project, name), command, meta
            )
        except NotFound:
            raise NotFound(f"no definition {name!r} in project {project}") from None
        return state

    async def definitions(self, project: str) -> list[DefinitionSummary]:
        """The project's live definitions, by name (from their projection)."""
        rows = await self.pool.fetch(
            "SELECT name, version, content, disabled, updated_by, updated_at"
            " FROM definitions WHERE project = $1 ORDER BY name",
            project,
        )
        return [
            DefinitionSummary(
                name=r["name"], version=r["version"], disabled=r["disabled"],
                description=_definition(r["content"]).description,
                params=[p.name for p in _definition(r["content"]).params],
                updated_by=r["updated_by"], updated_at=r["updated_at"],
            )
            for r in rows
        ]  # fmt: skip

    # ---- environments ---------------------------------------------------------------------

    async def environment(self, project: str, name: str) -> Environment:
        """An environment folded from its stream; `NotFound` if none (deleted)."""
        state, _ = await self.streams.load(ENVIRONMENT.name, ENVIRONMENT.stream_id(project, name))
        if state is None or state.deleted:
            raise NotFound(f"no environment {name!r} in project {project}", environment=name)
        return state  # type: ignore[no-any-return]

    async def save_environment(
        self, project: str, name: str, content: EnvironmentSpec, meta: EventMeta
    ) -> tuple[Environment, bool]:
        """Record a new version (nothing if the content is the current one's)."""
        sid = ENVIRONMENT.stream_id(project, name)
        prior, _ = await self.streams.load(ENVIRONMENT.name, sid)
        command = SaveEnvironment(project=project, name=name, content=content)
        state = await self.streams.execute(ENVIRONMENT.name, sid, command, meta)
        return state, prior is None or prior.deleted

    async def delete_environment(self, project: str, name: str, meta: EventMeta) -> Environment:
        try:
            state: Environment = await self.streams.execute(
                ENVIRONMENT.name, ENVIRONMENT.stream_id(project, name), DeleteEnvironment(), meta
            )
        except NotFound:
            raise NotFound(f"no environment {name!r} in project {project}") from None
        return state

    async def environments(self, project: str) -> list[EnvironmentSummary]:
        """The project's live environments, by name (from their projection)."""
        rows = await self.pool.fetch(
            "SELECT name, version, content, updated_by, updated_at"
            " FROM environments WHERE project = $1 ORDER BY name",
            project,
        )
        return [
            EnvironmentSummary(
                name=r["name"], version=r["version"],
                description=_environment(r["content"]).description,
                updated_by=r["updated_by"], updated_at=r["updated_at"],
            )
            for r in rows
        ]  # fmt: skip

    # ---- submit by reference --------------------------------------------------------------

    async def submit(
        self,
        request: DefinitionSubmit,
        project: str,
        meta: EventMeta,
        parent_job: uuid.UUID | None = None,
    ) -> Submitted:
        """Create a job from a definition: the spec resolved from the environment, the
        definition (the version asked, else the latest) and the request's own fields, with
        its parameters checked. A repeated idempotency key returns the earlier job if the
        request is the same as submitted then, even if the definition changed since (or
        was disabled)."""
        request = msgspec.structs.replace(request, project=project)
        if request.idempotency_key is not None:
            earlier = await self._earlier(request, project)
            if earlier is not None:
                return earlier
        command = await self.resolve(request, project)
        return await self.jobs.submit_with_reason(
            command.spec, meta, command.source, parent_job=parent_job
        )

    async def resolve(self, request: DefinitionSubmit, project: str) -> Submit:
        """The command a submit by reference makes, resolved now: its spec from the
        environment, the definition (the version asked, else the latest) and the request's
        own fields, with its parameters checked and the versions recorded as its source.
        The one resolution path, of API submits and schedules' occurrences alike. Raises
        `NotFound` (no such definition, version or environment), `Conflict` (disabled) or
        `InvalidValue` (parameters), each naming the request's field."""
        request = msgspec.structs.replace(request, project=project)
        definition = await self.definition(project, request.definition)
        refuse_disabled(definition)
        try:
            chosen = definition.at(request.definition_version)
        except NotFound as exc:
            raise NotFound(exc.message, field="$.definition_version") from None
        env_name = request.environment or chosen.content.environment
        environment = None
        if env_name is not None:
            try:
                environment = (await self.environment(project, env_name)).current
            except NotFound as exc:
                field = "$.environment" if request.environment else "$.definition"
                named_by = "the submit" if request.environment else "the definition"
                raise NotFound(f"{exc.message} (named by {named_by})", field=field) from None
        spec, params = resolve(
            request.definition,
            chosen.content,
            environment.content if environment is not None else None,
            request,
            project,
        )
        source = FromDefinition(
            definition=request.definition,
            definition_version=chosen.version,
            environment=env_name,
            environment_version=environment.version if environment is not None else None,
            params=params,
            request=request,
        )
        return Submit(spec=spec, source=source)

    async def _earlier(self, request: DefinitionSubmit, project: str) -> Submitted | None:
        """The job an earlier submit made under the request's idempotency key, if any (an
        `IdempotencyConflict` if that was another request)."""
        assert request.idempotency_key is not None
        found = await jobs_projection.find_by_idempotency_keys(
            self.pool, [(project, request.idempotency_key)]
        )
        view = found.get((project, request.idempotency_key))
        if view is None:
            return None
        earlier = Submit(spec=view.spec, source=view.source)
        probe = FromDefinition(definition=request.definition, definition_version=0, request=request)
        if not same_request(earlier, Submit(spec=view.spec, source=probe)):
            raise IdempotencyConflict(
                "idempotency_key was already used with a different request",
                field="$.idempotency_key",
                job_id=str(view.id),
            )
        reasons = await queue.waiting_reasons(self.pool, [view])
        return Submitted(view, False, reasons.get(view.id))


_definition_decoder = msgspec.json.Decoder(DefinitionSpec)
_environment_decoder = msgspec.json.Decoder(EnvironmentSpec)


def _definition(text: str) -> DefinitionSpec:
    return _definition_decoder.decode(text)


def _environment(text: str) -> EnvironmentSpec:
    return _environment_decoder.decode(text)
