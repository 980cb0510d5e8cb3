"""The state projections of this server's kinds of streams besides jobs (whose projection,
`jobs`, has its own module and rebuild); a test or an extension may register more."""

from __future__ import annotations

from .access import API_TOKENS, PROJECTS, SERVICE_ACCOUNTS
from .definitions import DEFINITIONS, ENVIRONMENTS
from .named import Projections
from .schedules import SCHEDULES
from .secrets import SECRETS
from .workflows import WORKFLOW_RUNS

# In this order: a token names its service account (a foreign key), a rebuild writes both.
PROJECTIONS = Projections(
    [
        PROJECTS,
        SERVICE_ACCOUNTS,
        API_TOKENS,
        SECRETS,
        DEFINITIONS,
        ENVIRONMENTS,
        SCHEDULES,
        WORKFLOW_RUNS,
    ]
)
