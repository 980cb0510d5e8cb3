"""The errors the system speaks in. HTTP statuses and CLI exit codes are mapped from these
in one place each (`api/errors.py`, `cli.py`)."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a caller can act on; `code` is stable, `message` is for people."""

    code = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    """The thing asked for does not exist (or the caller may not know it does)."""

    code = "not_found"


class InvalidInput(DomainError):
    """The request is malformed or a field is out of range; `details['field']` names it."""

    code = "invalid_input"


class Unauthenticated(DomainError):
    """No token, or one that is unknown, expired or revoked."""

    code = "unauthenticated"


class Forbidden(DomainError):
    """The caller is known but its role does not allow this."""

    code = "forbidden"


class Conflict(DomainError):
    """The thing to create exists already."""

    code = "conflict"


class RateLimited(DomainError):
    """Too many requests of this kind; `details['retry_after']` says when to try again."""

    code = "rate_limited"


class InvalidTransition(DomainError):
    """The command does not apply to the job in its current state."""

    code = "invalid_transition"


class IdempotencyConflict(DomainError):
    """An idempotency key was reused with a different spec."""

    code = "idempotency_conflict"


class ConcurrencyError(DomainError):
    """An append expected a stream version that another writer already took (I4)."""

    code = "concurrency_conflict"


class CorruptLog(DomainError):
    """The event log holds something the domain cannot fold (a gap, an impossible event)."""

    code = "corrupt_log"


class InvalidValue(InvalidInput):
    """A well-formed request with a value that is not acceptable (HTTP 422, like a field of
    the wrong type): a parameter a definition does not declare, a reserved environment
    variable, a placeholder naming no parameter; `details['field']` names it."""

    code = "validation_error"
