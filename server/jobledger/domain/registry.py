"""The kinds of streams this server knows; a test or an extension may register more."""

from __future__ import annotations

from .jobs import JOB
from .kinds import Registry
from .schedules import SCHEDULE
from .secrets import SECRET

KINDS = Registry([JOB, SECRET, SCHEDULE])
