"""The kinds of streams this server knows; a test or an extension may register more."""

from __future__ import annotations

from .access import PROJECT, SERVICE_ACCOUNT, TOKEN
from .archives import ARCHIVE
from .definitions import DEFINITION, ENVIRONMENT
from .jobs import JOB
from .kinds import Registry
from .schedules import SCHEDULE
from .secrets import SECRET
from .workflows import WORKFLOW

KINDS = Registry(
    [JOB, PROJECT, SERVICE_ACCOUNT, TOKEN, SECRET, DEFINITION, ENVIRONMENT, SCHEDULE, WORKFLOW]
)
# Issue 19: archive runs' checkpoints.
KINDS.register(ARCHIVE)
