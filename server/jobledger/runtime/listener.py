"""Moved to `store.notifications`; this name stays only until the CLI imports from there."""

from __future__ import annotations

from ..store.notifications import WorkerIdInUse

__all__ = ["WorkerIdInUse"]
