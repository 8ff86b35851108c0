"""Erasure deadlines: when a request must be confirmed and completed, and how late it runs.

S8 (CCPA): confirm a deletion request within 10 business days, complete it within 45
days. S7 (GDPR): act on it within one month. Tutela's default is stricter than both:
complete within 30 days, warn once 80% of that time has passed. Pure rules: time comes in
as arguments, always timezone-aware, and is computed in UTC.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

_SATURDAY: Final = 5
_BUSINESS_DAYS_A_WEEK: Final = 5


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def add_business_days(start: datetime, days: int) -> datetime:
    """`start` plus `days` business days (Monday to Friday), at the same time of day (S8).

    A request made on a weekend counts as made on the next Monday at that time, so
    Saturday plus 10 business days is the Monday two weeks later. Public holidays are
    not skipped, which can only make a deadline earlier, never later. The result is UTC.
    """
    if days < 0:
        raise ValueError("days must not be negative")
    current = _aware(start, "start")
    while current.weekday() >= _SATURDAY:
        current += timedelta(days=1)
    weeks, rest = divmod(days, _BUSINESS_DAYS_A_WEEK)
    current += timedelta(weeks=weeks)
    for _ in range(rest):
        current += timedelta(days=1)
        while current.weekday() >= _SATURDAY:
            current += timedelta(days=1)
    return current


def one_month_after(start: datetime) -> datetime:
    """The same date a calendar month later, or that month's last day if it has none (S7).

    GDPR's "one month" is a calendar month: from 31 January it ends on 28 (or 29)
    February, from 1 February on 1 March, shorter than 30 days. The result is UTC.
    """
    current = _aware(start, "start")
    year, month = (
        (current.year + 1, 1) if current.month == 12 else (current.year, current.month + 1)
    )
    day = min(current.day, calendar.monthrange(year, month)[1])
    return current.replace(year=year, month=month, day=day)


@dataclass(frozen=True)
class Deadlines:
    """When an erasure request must be confirmed and completed, and when to warn."""

    confirm_by: datetime
    complete_by: datetime
    warn_at: datetime


def deadlines_for(
    requested_at: datetime,
    *,
    confirm_business_days: int = 10,
    completion_days: int = 30,
    warn_fraction: float = 0.8,
) -> Deadlines:
    """The deadlines of a request made at `requested_at` (S7, S8).

    `warn_at` is `warn_fraction` of the way from the request to `complete_by`. A count of
    days is not a calendar month: a caller held to GDPR's month (S7) for requests made
    around February takes the earlier of `complete_by` and `one_month_after(requested_at)`.
    """
    if completion_days <= 0:
        raise ValueError("completion_days must be positive")
    if not 0 <= warn_fraction <= 1:
        raise ValueError("warn_fraction must lie between 0 and 1")
    start = _aware(requested_at, "requested_at")
    complete_by = start + timedelta(days=completion_days)
    return Deadlines(
        confirm_by=add_business_days(start, confirm_business_days),
        complete_by=complete_by,
        warn_at=start + (complete_by - start) * warn_fraction,
    )


class DeadlineState(StrEnum):
    ON_TRACK = "on_track"
    WARNING = "warning"
    OVERDUE = "overdue"


def state_at(d: Deadlines, now: datetime, *, completed_at: datetime | None = None) -> DeadlineState:
    """How a request stands at `now` against its completion deadline (S7, S8).

    A completed request is OVERDUE only if it was completed after `complete_by`, and
    ON_TRACK otherwise, whatever `now` is. An open one is OVERDUE once `now` is past
    `complete_by`, a WARNING from `warn_at` on, ON_TRACK before.
    """
    current = _aware(now, "now")
    if completed_at is not None:
        done = _aware(completed_at, "completed_at")
        return DeadlineState.OVERDUE if done > d.complete_by else DeadlineState.ON_TRACK
    if current > d.complete_by:
        return DeadlineState.OVERDUE
    if current >= d.warn_at:
        return DeadlineState.WARNING
    return DeadlineState.ON_TRACK
