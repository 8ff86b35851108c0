"""Deadlines of erasure requests: confirmed at once, complete within a calendar month or
30 days, one warning to the team at 80% of that time, and receipts that say whether the
limit was met (S7, S8)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.factories import make_home, seed_media
from tutela.audit.models import AuditEvent
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.erasure import receipts
from tutela.erasure.models import ErasureRequest, RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.notices.models import OutboxMessage

GUARDIAN = Requester(RequesterKind.GUARDIAN, "account:test")
WARNING_TAG = "erasure:request:deadline-warning"


def _request(container: Container, tag: str) -> ErasureRequest:
    home = make_home(container, tag=tag)
    made = seed_media(container, home, voices=1, clips=0)
    return container.erasure.request(
        Scope(ScopeKind.ITEM, home.household_id, item_id=made["voice"][0]), GUARDIAN
    )


def _row(container: Container, request_id: uuid.UUID) -> ErasureRequest:
    with container.stores.session() as s:
        row = s.get(ErasureRequest, request_id)
        assert row is not None
        return row


def _warnings(container: Container) -> tuple[list[AuditEvent], list[OutboxMessage]]:
    with container.stores.session() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.tag == WARNING_TAG)))
        notices = list(
            s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "erasure_deadline"))
        )
    return events, notices


def _receipt(container: Container, row: ErasureRequest) -> dict[str, object]:
    public = receipts.signing_key(container.vault.keys, now=container.clock.now()).public_key()
    return receipts.verify(json.loads(row.receipt or "{}"), public)


@pytest.mark.parametrize(
    ("requested", "confirm_by", "complete_by"),
    [
        # A Saturday: the 10 business days start on Monday. A calendar month from 31
        # January ends on 28 February, sooner than 30 days (S7).
        (
            datetime(2026, 1, 31, 12, tzinfo=UTC),
            datetime(2026, 2, 16, 12, tzinfo=UTC),
            datetime(2026, 2, 28, 12, tzinfo=UTC),
        ),
        # A Tuesday in March: 30 days end before the calendar month does.
        (
            datetime(2026, 3, 10, 12, tzinfo=UTC),
            datetime(2026, 3, 24, 12, tzinfo=UTC),
            datetime(2026, 4, 9, 12, tzinfo=UTC),
        ),
    ],
)
def test_a_new_request_is_confirmed_at_once_with_its_limits(
    container: Container,
    clock: FakeClock,
    requested: datetime,
    confirm_by: datetime,
    complete_by: datetime,
) -> None:
    clock.set(requested)
    row = _row(container, _request(container, f"due{requested:%m%d}").id)
    assert row.requested_at == requested
    assert row.confirmed_at == requested
    assert row.confirm_by == confirm_by
    assert row.complete_by == complete_by
    assert row.complete_by - row.requested_at <= timedelta(days=45)  # S8's outer limit
    assert row.warn_at == requested + (complete_by - requested) * 0.8


def test_a_request_left_open_warns_the_team_once_at_80_percent(
    container: Container, clock: FakeClock
) -> None:
    row = _row(container, _request(container, "warn").id)

    clock.set(row.warn_at - timedelta(seconds=1))
    assert container.erasure.check_deadlines() == 0
    assert _warnings(container) == ([], [])

    clock.set(row.warn_at + timedelta(minutes=1))
    assert container.erasure.check_deadlines() == 1
    assert _row(container, row.id).warned_at == clock.now()
    events, notices = _warnings(container)
    assert [e.subject for e in events] == [f"erasure:{row.id}"]
    assert len(notices) == 1
    # To the operator's team, not to the household.
    assert notices[0].household_id is None and notices[0].account_id is None

    clock.advance(timedelta(days=3))
    assert container.erasure.check_deadlines() == 0
    assert tuple(map(len, _warnings(container))) == (1, 1)
    assert _row(container, row.id).status == "pending"


def test_a_completed_request_never_warns(container: Container, clock: FakeClock) -> None:
    row = _request(container, "nowarn")
    assert container.erasure.run_pending().completed == 1
    done = _row(container, row.id)
    assert _receipt(container, done)["deadline_met"] is True

    clock.set(done.complete_by + timedelta(days=10))
    assert container.erasure.check_deadlines() == 0
    assert _warnings(container) == ([], [])
    assert _row(container, row.id).warned_at is None


def test_a_receipt_of_a_request_completed_late_says_the_deadline_was_missed(
    container: Container, clock: FakeClock
) -> None:
    row = _request(container, "late")
    clock.set(row.complete_by + timedelta(hours=1))
    assert container.erasure.run_pending().completed == 1
    done = _row(container, row.id)
    body = _receipt(container, done)
    assert body["deadline_met"] is False
    assert body["complete_by"] == row.complete_by.isoformat()
    assert body["completed_at"] == clock.now().isoformat()
