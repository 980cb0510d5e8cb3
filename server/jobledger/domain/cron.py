"""When a schedule's occurrences fall: a cron expression in an IANA time zone, read by
`cronsim` (not by us). Pure: every function takes the instant it reasons from.

The rules are cronsim's, which are Debian cron's for a five-field expression naming a fixed
minute and hour: a time that does not exist (02:30 on a spring-forward day) runs at the
first moment after the gap (03:00), and a time that occurs twice (02:30 when autumn turns
03:00 back to 02:00) runs once, at its first occurrence. Expressions with wildcards in the
minute or hour (`*/15 * * * *`), and six-field ones, follow the clock as it is: nothing in
the skipped hour, both passes of the repeated one. Occurrences are handled in UTC."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

#: The @-aliases as crontab(5) defines them (@reboot has no meaning here).
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class CronError(ValueError):
    """An expression or a time zone that cannot be used; the message says why."""


def expand(expr: str) -> str:
    """The expression with an @-alias replaced by its five fields."""
    text = expr.strip()
    return ALIASES.get(text.lower(), text)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone of that name; `CronError` for one that does not exist."""
    try:
        if not name or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(f"unknown time zone {name!r} (an IANA name: Europe/Prague)") from None


def check(expr: str, tz: str) -> None:
    """Raise `CronError` unless the expression has a next occurrence in the zone."""
    text = expand(expr)
    if len(text.split()) not in (5, 6):
        raise CronError("a cron expression has 5 fields (6 with seconds first) or is an @-alias")
    try:
        next(CronSim(text, datetime(2000, 1, 1, tzinfo=zone(tz))))
    except CronSimError as exc:
        raise CronError(f"invalid cron expression: {exc}") from None
    except StopIteration:
        raise CronError("the cron expression never matches") from None


def after(expr: str, tz: str, t: datetime) -> Iterator[datetime]:
    """The occurrences strictly after `t`, oldest first, in UTC."""
    local = t.astimezone(zone(tz))
    try:
        for o in CronSim(expand(expr), local):
            yield o.astimezone(UTC)
    except CronSimError as exc:
        raise CronError(str(exc)) from None


def at_or_before(expr: str, tz: str, t: datetime) -> Iterator[datetime]:
    """The occurrences at or before `t`, newest first, in UTC."""
    # cronsim's reverse iteration starts strictly before its start (after dropping
    # microseconds): start one second later so that `t` itself counts.
    start = (t + timedelta(seconds=1)).replace(microsecond=0)
    try:
        for o in CronSim(expand(expr), start.astimezone(zone(tz)), reverse=True):
            o = o.astimezone(UTC)
            if o <= t:
                yield o
    except CronSimError as exc:
        raise CronError(str(exc)) from None
