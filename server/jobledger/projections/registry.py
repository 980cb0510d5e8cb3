"""The state projections of this server's kinds of streams besides jobs (whose projection,
`jobs`, has its own module and rebuild); a test or an extension may register more."""

from __future__ import annotations

from .named import Projections
from .schedules import SCHEDULES
from .secrets import SECRETS

PROJECTIONS = Projections([SECRETS, SCHEDULES])
