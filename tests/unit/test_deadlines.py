"""Erasure deadlines: confirm in 10 business days, complete in 30 days, warn at 80% (S7, S8)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tutela.erasure.deadlines import (
    Deadlines,
    DeadlineState,
    add_business_days,
    deadlines_for,
    one_month_after,
    state_at,
)

FRIDAY = datetime(2026, 1, 2, 15, 30, tzinfo=UTC)
SATURDAY = datetime(2026, 1, 3, 9, 0, tzinfo=UTC)
SUNDAY = datetime(2026, 1, 4, 23, 59, tzinfo=UTC)
WEDNESDAY = datetime(2026, 1, 7, 8, 0, tzinfo=UTC)


def test_the_days_used_here_are_what_their_names_say() -> None:
    assert [d.strftime("%A") for d in (FRIDAY, SATURDAY, SUNDAY, WEDNESDAY)] == [
        "Friday",
        "Saturday",
        "Sunday",
        "Wednesday",
    ]


def test_a_friday_request_is_confirmed_by_the_friday_two_weeks_later() -> None:
    assert add_business_days(FRIDAY, 10) == datetime(2026, 1, 16, 15, 30, tzinfo=UTC)


def test_a_weekend_request_counts_from_the_next_monday() -> None:
    assert add_business_days(SATURDAY, 10) == datetime(2026, 1, 19, 9, 0, tzinfo=UTC)
    assert add_business_days(SUNDAY, 10) == datetime(2026, 1, 19, 23, 59, tzinfo=UTC)
    assert add_business_days(SATURDAY, 0) == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert add_business_days(SUNDAY, 1) == datetime(2026, 1, 6, 23, 59, tzinfo=UTC)


def test_business_days_skip_the_weekend() -> None:
    assert add_business_days(WEDNESDAY, 0) == WEDNESDAY
    assert add_business_days(WEDNESDAY, 2) == datetime(2026, 1, 9, 8, 0, tzinfo=UTC)
    assert add_business_days(WEDNESDAY, 3) == datetime(2026, 1, 12, 8, 0, tzinfo=UTC)
    assert add_business_days(FRIDAY, 1) == datetime(2026, 1, 5, 15, 30, tzinfo=UTC)


def _count_by_walking(start: datetime, days: int) -> datetime:
    current = start
    while current.weekday() >= 5:
        current += timedelta(days=1)
    counted = 0
    while counted < days:
        current += timedelta(days=1)
        if current.weekday() < 5:
            counted += 1
    return current


def test_business_days_agree_with_counting_day_by_day() -> None:
    for offset in range(14):
        start = FRIDAY + timedelta(days=offset)
        for days in range(40):
            result = add_business_days(start, days)
            assert result == _count_by_walking(start, days), (start, days)
            assert result.weekday() < 5
            assert result.time() == start.time()


def test_another_offset_is_counted_in_utc() -> None:
    """Friday 23:30 in New York is Saturday 04:30 UTC: counted from Monday."""
    new_york_friday = datetime(2026, 1, 2, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    result = add_business_days(new_york_friday, 10)
    assert result == datetime(2026, 1, 19, 4, 30, tzinfo=UTC)
    assert result.tzinfo is UTC


def test_naive_times_and_negative_days_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_business_days(datetime(2026, 1, 2, 15, 30), 10)  # noqa: DTZ001
    with pytest.raises(ValueError, match="negative"):
        add_business_days(FRIDAY, -1)
    with pytest.raises(ValueError, match="timezone-aware"):
        deadlines_for(datetime(2026, 1, 2))  # noqa: DTZ001


def test_default_deadlines_are_stricter_than_ccpa() -> None:
    d = deadlines_for(FRIDAY)
    assert d == Deadlines(
        confirm_by=datetime(2026, 1, 16, 15, 30, tzinfo=UTC),
        complete_by=FRIDAY + timedelta(days=30),
        warn_at=FRIDAY + timedelta(days=24),
    )
    assert d.confirm_by < d.warn_at < d.complete_by
    assert d.complete_by - FRIDAY <= timedelta(days=45)


def test_deadlines_take_other_terms() -> None:
    d = deadlines_for(SATURDAY, confirm_business_days=5, completion_days=45, warn_fraction=0.5)
    assert d.confirm_by == datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
    assert d.complete_by == SATURDAY + timedelta(days=45)
    assert d.warn_at == SATURDAY + timedelta(days=22, hours=12)


@pytest.mark.parametrize(
    "terms",
    [{"completion_days": 0}, {"warn_fraction": 1.5}, {"warn_fraction": -0.1}],
    ids=["no time", "warn after the deadline", "warn before the request"],
)
def test_senseless_terms_are_refused(terms: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        deadlines_for(FRIDAY, **terms)  # type: ignore[arg-type]


def test_state_moves_from_on_track_to_warning_at_80_percent_then_overdue() -> None:
    d = deadlines_for(FRIDAY)
    assert state_at(d, FRIDAY) is DeadlineState.ON_TRACK
    assert state_at(d, FRIDAY + timedelta(days=23, hours=23)) is DeadlineState.ON_TRACK
    assert state_at(d, FRIDAY + timedelta(days=24)) is DeadlineState.WARNING
    assert state_at(d, FRIDAY + timedelta(days=30)) is DeadlineState.WARNING
    assert state_at(d, FRIDAY + timedelta(days=30, seconds=1)) is DeadlineState.OVERDUE
    assert state_at(d, FRIDAY + timedelta(days=60)) is DeadlineState.OVERDUE


def test_a_completed_request_is_judged_by_when_it_completed() -> None:
    d = deadlines_for(FRIDAY)
    later = FRIDAY + timedelta(days=90)
    on_time = FRIDAY + timedelta(days=29)
    assert state_at(d, later, completed_at=on_time) is DeadlineState.ON_TRACK
    assert state_at(d, later, completed_at=FRIDAY + timedelta(days=25)) is DeadlineState.ON_TRACK
    late = FRIDAY + timedelta(days=31)
    assert state_at(d, later, completed_at=late) is DeadlineState.OVERDUE
    assert state_at(d, FRIDAY + timedelta(days=1), completed_at=late) is DeadlineState.OVERDUE


def test_state_refuses_naive_times() -> None:
    d = deadlines_for(FRIDAY)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        state_at(d, datetime(2026, 1, 10))  # noqa: DTZ001
    with pytest.raises(ValueError, match="completed_at must be timezone-aware"):
        state_at(d, FRIDAY, completed_at=datetime(2026, 1, 10))  # noqa: DTZ001


def test_states_are_stable_strings() -> None:
    assert [s.value for s in DeadlineState] == ["on_track", "warning", "overdue"]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (datetime(2026, 1, 15, 10, tzinfo=UTC), datetime(2026, 2, 15, 10, tzinfo=UTC)),
        (datetime(2026, 1, 31, 10, tzinfo=UTC), datetime(2026, 2, 28, 10, tzinfo=UTC)),
        (datetime(2028, 1, 31, 10, tzinfo=UTC), datetime(2028, 2, 29, 10, tzinfo=UTC)),
        (datetime(2026, 2, 1, 10, tzinfo=UTC), datetime(2026, 3, 1, 10, tzinfo=UTC)),
        (datetime(2026, 12, 31, 10, tzinfo=UTC), datetime(2027, 1, 31, 10, tzinfo=UTC)),
    ],
)
def test_one_month_is_a_calendar_month(start: datetime, expected: datetime) -> None:
    assert one_month_after(start) == expected


def test_thirty_days_can_outrun_gdprs_month_in_february() -> None:
    """Why `one_month_after` exists: from 1 February, 30 days end after 1 March (S7)."""
    requested = datetime(2026, 2, 1, 10, tzinfo=UTC)
    assert deadlines_for(requested).complete_by > one_month_after(requested)
    with pytest.raises(ValueError, match="timezone-aware"):
        one_month_after(datetime(2026, 2, 1))  # noqa: DTZ001
