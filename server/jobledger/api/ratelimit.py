"""Submit rate limits per project: a token bucket per project in each API process.

A project's `submit_rate` (jobs per second, refilled continuously) and `submit_burst` (the
bucket's size) come from its settings, else from the server's defaults; a rate of 0 means
no limit. With several API processes each keeps its own buckets, so the effective limit
is per process."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from ..store.access import AccessStore

#: Seconds a project's settings are reused before they are read again.
SETTINGS_TTL = 2.0


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass(frozen=True)
class RateDefaults:
    """The server's rate for projects that set none (0: unlimited) and its burst."""

    rate: float = 0.0
    burst: int = 100


class SubmitLimiter:
    """Decides whether a project may submit one more job now."""

    def __init__(self, defaults: RateDefaults) -> None:
        self.defaults = defaults
        self._buckets: dict[str, _Bucket] = {}
        # project -> (when read, rate, burst)
        self._settings: dict[str, tuple[float, float, int]] = {}

    async def _limits(self, store: AccessStore, project: str, now: float) -> tuple[float, int]:
        cached = self._settings.get(project)
        if cached is None or now - cached[0] > SETTINGS_TTL:
            settings = await store.rate_settings(project)
            rate, burst = self.defaults.rate, self.defaults.burst
            if settings is not None:
                rate = rate if settings.submit_rate is None else settings.submit_rate
                burst = burst if settings.submit_burst is None else settings.submit_burst
            cached = (now, float(rate), int(burst))
            self._settings[project] = cached
        return cached[1], cached[2]

    async def retry_after(self, store: AccessStore, project: str, count: int = 1) -> float | None:
        """Take tokens for `count` submits; None if allowed, else seconds until allowed. A
        batch larger than the burst goes through on a full bucket and leaves it in debt."""
        now = time.monotonic()
        rate, burst = await self._limits(store, project, now)
        if rate <= 0:
            return None
        bucket = self._buckets.setdefault(project, _Bucket(tokens=float(burst), at=now))
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        need = float(min(count, burst)) or 1.0
        if bucket.tokens >= need:
            bucket.tokens -= count
            return None
        return (need - bucket.tokens) / rate


SUBMIT_LIMITER = web.AppKey("submit_limiter", SubmitLimiter)
