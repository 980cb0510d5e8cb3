"""What a user asks for when submitting a job, validated by msgspec at the boundary."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

# Names users write in URLs, CLI flags and labels: keep them boring and safe.
#: Running jobs a project may have unless its own limit says otherwise.
DEFAULT_MAX_RUNNING_JOBS = 10
PROJECT_NAME = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"
DEFAULT_PROJECT = "default"

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern=PROJECT_NAME)]
LabelKey = Annotated[
    str, msgspec.Meta(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
]
LabelValue = Annotated[str, msgspec.Meta(max_length=255)]
EnvName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
EnvValue = Annotated[str, msgspec.Meta(max_length=32_768)]
# ASCII only, so the pattern means the same to Python and to JSON Schema (ECMA) readers.
Image = Annotated[
    str, msgspec.Meta(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")
]
Arg = Annotated[str, msgspec.Meta(max_length=32_768)]
Tag = Annotated[
    str, msgspec.Meta(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]

Cpu = Annotated[float, msgspec.Meta(gt=0, le=64)]
MemoryMb = Annotated[int, msgspec.Meta(ge=6, le=1_048_576)]
Seconds = Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 3600)]
GraceSeconds = Annotated[int, msgspec.Meta(ge=0, le=3600)]
Priority = Annotated[int, msgspec.Meta(ge=-1000, le=1000)]
Retries = Annotated[int, msgspec.Meta(ge=0, le=20)]
BackoffSeconds = Annotated[float, msgspec.Meta(ge=0, le=24 * 3600)]


class Resources(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """CPU (in cores, fractions allowed) and memory (MiB) a job's container may use."""

    cpu: Cpu = 1.0
    memory_mb: MemoryMb = 512


class RetryPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How often a failed job is tried again; cancels are never retried."""

    max_retries: Retries = 0
    #: Delay before retry n is `backoff_seconds * 2**(n-1)`.
    backoff_seconds: BackoffSeconds = 10.0


class SecretRef(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """An environment variable's value kept as a secret of the job's project: the worker
    resolves it (the latest version, or `version`) when the job starts and injects it into
    the container; events and views hold only this reference."""

    secret: Name
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None


#: What an environment variable is set to: a value, or a reference to a secret.
EnvSetting = EnvValue | SecretRef


class JobSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One job as submitted: the action to run and how, where and when to run it."""

    image: Image
    command: Annotated[list[Arg], msgspec.Meta(max_length=1024)] = []
    env: Annotated[dict[EnvName, EnvSetting], msgspec.Meta(max_length=512)] = {}
    workdir: Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=r"^/")] | None = (
        None
    )
    resources: Resources = Resources()
    timeout_seconds: Seconds | None = None
    stop_grace_seconds: GraceSeconds = 10
    priority: Priority = 0
    labels: Annotated[dict[LabelKey, LabelValue], msgspec.Meta(max_length=64)] = {}
    project: Name = DEFAULT_PROJECT
    scheduled_for: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    idempotency_key: Key | None = None
    retry: RetryPolicy = RetryPolicy()
    tags: Annotated[list[Tag], msgspec.Meta(max_length=32)] = []
    concurrency_key: Key | None = None
    #: How many jobs sharing `concurrency_key` may run at once.
    concurrency_limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1
