"""The inactive-child rule on a fake clock: identified after 18 months without use, the
guardians told, then kept, used again, or erased with a receipt, never before its date
(A1, A2, A3, A8)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from tests.factories import make_home, seed_media
from tutela.audit.models import AuditEvent
from tutela.audit.service import AuditTag
from tutela.container import Container
from tutela.core.clock import FakeClock, as_utc
from tutela.core.errors import Conflict, NotFound
from tutela.erasure.models import ErasureRequest
from tutela.households.models import Profile
from tutela.households.service import CreatedHome
from tutela.notices.mail import latest_message
from tutela.notices.models import OutboxMessage
from tutela.retention import service
from tutela.retention.models import InactiveChild
from tutela.retention.policy import default_policy_path, load_policy
from tutela.retention.sweep import SweepReport, run_sweep
from tutela.vault.models import MediaItem

IDLE = timedelta(days=548)  # the packaged policy: 18 months
GRACE = timedelta(days=89)  # the packaged policy: erased by day 90 (A2)


def _guardian(home: CreatedHome) -> uuid.UUID:
    return next(iter(home.accounts.values()))


def _record(container: Container, home: CreatedHome) -> InactiveChild:
    with container.stores.session() as s:
        row = s.scalars(
            select(InactiveChild)
            .where(InactiveChild.profile_id == home.child_profiles[0])
            .order_by(InactiveChild.identified_at.desc())
        ).first()
        assert row is not None
        return row


def _profile(container: Container, home: CreatedHome) -> Profile | None:
    with container.stores.session() as s:
        return s.get(Profile, (home.household_id, home.child_profiles[0]))


def _profile_erasures(container: Container) -> list[ErasureRequest]:
    with container.stores.session() as s:
        return list(s.scalars(select(ErasureRequest).where(ErasureRequest.scope_kind == "profile")))


def _idle_child(
    container: Container, clock: FakeClock, tag: str
) -> tuple[CreatedHome, SweepReport]:
    """A home whose child was last active at creation, swept 18 months and a day later."""
    home = make_home(container, tag=tag)
    clock.advance(IDLE + timedelta(days=1))
    return home, run_sweep(container)


def test_an_idle_child_is_identified_and_the_guardian_told_before_anything_is_erased(
    container: Container, clock: FakeClock
) -> None:
    home = make_home(container, tag="notice")
    clock.advance(IDLE - timedelta(days=1))
    assert run_sweep(container).inactive_identified == 0  # not idle long enough yet
    clock.advance(timedelta(days=2))
    report = run_sweep(container)
    assert report.inactive_identified == 1
    assert report.inactive_notified == 1
    assert report.inactive_erasing == 0
    row = _record(container, home)
    assert row.outcome == "pending"
    assert row.notified_at is not None
    assert row.erase_after == clock.now() + GRACE
    with container.stores.session() as s:
        notices = list(
            s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "inactive_child"))
        )
        identified = s.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.tag == AuditTag.INACTIVE_CHILD_IDENTIFIED)
        )
    assert [(n.household_id, n.account_id) for n in notices] == [
        (home.household_id, _guardian(home))
    ]
    assert identified == 1
    assert _profile(container, home) is not None
    assert _profile_erasures(container) == []
    # The guardian's email names the child and the date it would be erased.
    assert container.deliver_notices() == 1
    mail = latest_message(container.settings.mail_path)
    assert mail is not None
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert "Lily Marchetti" in text
    assert (clock.now() + GRACE).date().isoformat() in text
    # A later sweep neither identifies the child again nor tells the guardian twice.
    clock.advance(timedelta(days=1))
    again = run_sweep(container)
    assert again.inactive_identified == 0
    assert again.inactive_notified == 0


def test_a_dry_run_identifies_nobody_and_sends_nothing(
    container: Container, clock: FakeClock
) -> None:
    home = make_home(container, tag="dry")
    clock.advance(IDLE + timedelta(days=1))
    report = run_sweep(container, dry_run=True)
    assert (report.inactive_identified, report.inactive_notified) == (1, 1)
    with container.stores.session() as s:
        assert s.scalar(select(func.count()).select_from(InactiveChild)) == 0
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    assert _profile(container, home) is not None


def test_a_kept_profile_is_not_erased(container: Container, clock: FakeClock) -> None:
    home, _ = _idle_child(container, clock, "keep")
    clock.advance(timedelta(days=30))
    with container.stores.session() as s:
        kept = service.keep_inactive_child(
            s,
            household_id=home.household_id,
            profile_id=home.child_profiles[0],
            guardian_account_id=_guardian(home),
            how="console",
            now=clock.now(),
        )
    assert kept.outcome == "kept"
    clock.advance(GRACE)
    report = run_sweep(container)
    assert report.inactive_erasing == 0
    assert report.requests == []
    container.erasure.run_pending()
    assert _profile(container, home) is not None
    row = _record(container, home)
    # A3: who kept it, when, and how.
    assert (row.outcome, row.kept_by, row.kept_how) == (
        "kept",
        f"account:{_guardian(home)}",
        "console",
    )
    assert row.decided_at == clock.now() - GRACE
    with container.stores.session() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.tag == AuditTag.INACTIVE_CHILD_KEPT)
            )
            == 1
        )
        # Nothing is pending any more: a second keep is refused.
        with pytest.raises(Conflict) as refused:
            service.keep_inactive_child(
                s,
                household_id=home.household_id,
                profile_id=home.child_profiles[0],
                guardian_account_id=_guardian(home),
                how="console",
                now=clock.now(),
            )
    assert refused.value.code == "no_pending_inactivity"


def test_only_a_guardian_keeps_a_profile(container: Container, clock: FakeClock) -> None:
    home = make_home(container, tag="notguardian", second_adult=True)
    clock.advance(IDLE + timedelta(days=1))
    run_sweep(container)
    other_adult = next(a for e, a in home.accounts.items() if e.startswith("bruno."))
    with container.stores.session() as s, pytest.raises(NotFound):
        service.keep_inactive_child(
            s,
            household_id=home.household_id,
            profile_id=home.child_profiles[0],
            guardian_account_id=other_adult,
            how="api",
            now=clock.now(),
        )
    assert _record(container, home).outcome == "pending"


def test_a_profile_used_again_is_not_erased(container: Container, clock: FakeClock) -> None:
    home, _ = _idle_child(container, clock, "reactivate")
    clock.advance(timedelta(days=10))
    seed_media(container, home)  # an upload: the profile is active again
    clock.advance(GRACE)
    report = run_sweep(container)
    assert report.inactive_reactivated == 1
    assert report.inactive_erasing == 0
    container.erasure.run_pending(limit=50)
    assert _profile(container, home) is not None
    assert _profile_erasures(container) == []
    row = _record(container, home)
    assert row.outcome == "reactivated"
    with container.stores.session() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.tag == AuditTag.INACTIVE_CHILD_REACTIVATED)
            )
            == 1
        )


def test_an_idle_child_is_erased_after_the_grace_period_never_before(
    container: Container, clock: FakeClock
) -> None:
    home = make_home(container, tag="erase")
    seed_media(container, home, days_ago=0)
    clock.advance(IDLE + timedelta(days=1))
    run_sweep(container)
    container.erasure.run_pending(limit=50)  # items the item rules expired meanwhile
    erase_after = _record(container, home).erase_after
    clock.set(erase_after - timedelta(seconds=1))
    early = run_sweep(container)
    assert early.inactive_erasing == 0
    assert _profile_erasures(container) == []
    clock.set(erase_after + timedelta(days=1))
    report = run_sweep(container)
    assert report.inactive_erasing == 1
    [request] = _profile_erasures(container)
    assert request.id in report.requests
    assert (request.requester_kind, request.requested_by) == (
        "inactive_child",
        "rule:inactive-child",
    )
    # The guardian can no longer keep it once its erasure has begun.
    with container.stores.session() as s, pytest.raises(Conflict):
        service.keep_inactive_child(
            s,
            household_id=home.household_id,
            profile_id=home.child_profiles[0],
            guardian_account_id=_guardian(home),
            how="api",
            now=clock.now(),
        )
    container.erasure.run_pending(limit=50)
    assert _profile(container, home) is None
    with container.stores.session() as s:
        done = s.get(ErasureRequest, request.id)
        assert done is not None
        assert done.status == "completed", done.findings
        assert done.receipt is not None
        assert (
            s.scalar(
                select(func.count())
                .select_from(MediaItem)
                .where(MediaItem.profile_id == home.child_profiles[0])
            )
            == 0
        )
    # Erased once: the next sweep has nothing more to do for it.
    assert run_sweep(container).inactive_erasing == 0


def test_a_legal_hold_suspends_the_erasure_of_an_idle_child(
    container: Container, clock: FakeClock, tmp_path: Path
) -> None:
    home, _ = _idle_child(container, clock, "hold")
    expires = (clock.now() + GRACE + timedelta(days=30)).date().isoformat()
    path = tmp_path / "hold.toml"
    path.write_text(
        default_policy_path().read_text(encoding="utf-8")
        + f'\n[[hold]]\nid = "case-2"\nhousehold = "{home.household_id}"\n'
        f'profile = "{home.child_profiles[0]}"\nreason = "Preservation"\nexpires = {expires}\n',
        encoding="utf-8",
    )
    container._policy = load_policy(path)
    clock.advance(GRACE + timedelta(days=1))
    report = run_sweep(container)
    assert (report.inactive_erasing, report.inactive_held) == (0, 1)
    assert _record(container, home).outcome == "pending"
    assert _profile_erasures(container) == []


def test_a_kept_child_idle_for_another_period_is_identified_again(
    container: Container, clock: FakeClock
) -> None:
    home, _ = _idle_child(container, clock, "again")
    with container.stores.session() as s:
        service.keep_inactive_child(
            s,
            household_id=home.household_id,
            profile_id=home.child_profiles[0],
            guardian_account_id=_guardian(home),
            how="console",
            now=clock.now(),
        )
    clock.advance(IDLE - timedelta(days=1))
    assert run_sweep(container).inactive_identified == 0
    clock.advance(timedelta(days=2))
    assert run_sweep(container).inactive_identified == 1
    assert _record(container, home).outcome == "pending"


def test_the_last_activity_decides_not_the_creation(container: Container, clock: FakeClock) -> None:
    home = make_home(container, tag="recent")
    clock.advance(IDLE + timedelta(days=1))
    with container.stores.session() as s:
        s.execute(
            update(Profile)
            .where(Profile.id == home.child_profiles[0])
            .values(last_active_at=clock.now() - timedelta(days=3))
        )
        s.commit()
    assert run_sweep(container).inactive_identified == 0


def test_a_sweep_that_died_after_claiming_requests_the_erasure_next_time(
    container: Container, clock: FakeClock
) -> None:
    """A crash between claiming the record and requesting the erasure must not leave the
    child kept for ever (A2); the request's deadline is 90 days from identification."""
    home, _ = _idle_child(container, clock, "stuck")
    identified = _record(container, home).identified_at
    clock.advance(GRACE + timedelta(hours=1))
    with container.stores.session() as s:
        s.execute(
            update(InactiveChild)
            .where(InactiveChild.profile_id == home.child_profiles[0])
            .values(outcome="erasing", decided_at=clock.now())
        )
        s.commit()
    assert _profile_erasures(container) == []
    report = run_sweep(container)
    assert report.inactive_erasing == 1
    [request] = _profile_erasures(container)
    assert _record(container, home).request_id == request.id
    assert as_utc(request.complete_by) <= as_utc(identified) + timedelta(days=90)
