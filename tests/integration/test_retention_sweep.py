"""The retention sweep over the real stores: expired items go through the erasure engine
with a receipt, choices shorten and never lengthen, holds and dry runs change nothing,
batches, and unanswered consent contacts (A5, A6, A8, C5, C9).

How the selection finds expired items (its plans, keyset pages, choices, derived
artifacts, batch calls) is tested in `test_retention_selection.py`."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from tests.factories import make_home, seed_media
from tutela.audit.models import AuditEvent
from tutela.audit.service import AuditTag
from tutela.container import Container, build
from tutela.core.clock import FakeClock
from tutela.core.ids import uuid7
from tutela.erasure.models import ErasureRequest
from tutela.erasure.scope import Member, Requester
from tutela.households.models import Profile
from tutela.households.service import CreatedHome
from tutela.retention import service
from tutela.retention.models import ConsentContact
from tutela.retention.policy import default_policy_path, load_policy
from tutela.retention.sweep import SweepReport, run_sweep, scheduled_sweep
from tutela.settings import Settings
from tutela.vault.models import MediaItem


def _items(container: Container, household_id: uuid.UUID) -> set[uuid.UUID]:
    with container.stores.session() as s:
        return set(s.scalars(select(MediaItem.id).where(MediaItem.household_id == household_id)))


def _requests(container: Container) -> list[ErasureRequest]:
    with container.stores.session() as s:
        return list(s.scalars(select(ErasureRequest).order_by(ErasureRequest.requested_at)))


def _sweep_and_erase(container: Container, *, batch_size: int | None = None) -> SweepReport:
    report = run_sweep(container, batch_size=batch_size)
    container.erasure.run_pending(limit=100)
    return report


def _assert_receipts(container: Container, report: SweepReport) -> None:
    assert report.requests
    with container.stores.session() as s:
        for request_id in report.requests:
            row = s.get(ErasureRequest, request_id)
            assert row is not None
            assert row.status == "completed", row.findings
            assert row.receipt is not None


def _adult(home: CreatedHome) -> uuid.UUID:
    return next(iter(home.adult_profiles.values()))


def _owner(home: CreatedHome) -> uuid.UUID:
    return next(iter(home.accounts.values()))


def _choose(
    container: Container, home: CreatedHome, profile: uuid.UUID, kind: str, choice: str
) -> None:
    with container.stores.session() as s:
        service.set_auto_delete(
            s,
            household_id=home.household_id,
            profile_id=profile,
            kind=kind,
            choice=choice,
            actor=f"account:{_owner(home)}",
            now=container.clock.now(),
        )


def _policy_text(*, replace: tuple[str, str] | None = None, hold: str = "") -> str:
    text = default_policy_path().read_text(encoding="utf-8")
    if replace is not None:
        assert replace[0] in text
        text = text.replace(replace[0], replace[1], 1)
    return text + hold


CHILD_VIDEO_90 = (
    'kind = "video"\nsubject = "child"\npurpose = "Let the household watch camera recordings in '
    'which a child appears."\nbusiness_need = "Incidents at home are usually looked into within '
    "weeks; a child's image is kept no longer than that allows.\"\nmax_age_days = 90"
)


def test_expired_child_items_are_erased_with_a_receipt_and_the_rest_stay(
    container: Container,
) -> None:
    home = make_home(container, tag="expire")
    old = seed_media(container, home, days_ago=40)  # child voice 30 d, location 7 d
    fresh = seed_media(container, home, days_ago=1)
    report = _sweep_and_erase(container)
    # Two voice recordings and a location batch; each transcript goes with its voice.
    assert report.expired_items == 3
    _assert_receipts(container, report)
    left = _items(container, home.household_id)
    gone = {*old["voice"], *old["transcript"], *old["location"]}
    assert not gone & left
    # A child's video is kept 90 days: 40 days old, it stays with its thumbnail.
    assert {*old["video"], *old["thumbnail"]} <= left
    assert {i for ids in fresh.values() for i in ids} <= left
    rows = _requests(container)
    # One batch of the rule's: the voice recordings and the location batch together.
    assert {(r.requester_kind, r.requested_by) for r in rows} == {("retention", "rule:retention")}
    with container.stores.session() as s:
        swept = s.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.tag == AuditTag.RETENTION_SWEPT)
        )
    assert swept == 1


def test_a_second_sweep_before_the_worker_runs_asks_for_nothing_new(container: Container) -> None:
    home = make_home(container, tag="twice")
    seed_media(container, home, days_ago=40)
    first = run_sweep(container)
    assert first.requests
    second = run_sweep(container)
    # Items named by a request leave the selection with the request itself.
    assert second.expired_items == 0
    assert second.requests == []
    assert len(_requests(container)) == len(first.requests)


def test_an_adult_choosing_never_keeps_recordings_until_the_policy_age(
    container: Container,
) -> None:
    home = make_home(container, tag="never")
    adult = _adult(home)
    _choose(container, home, adult, "voice", "never")
    kept = seed_media(container, home, profile=adult, days_ago=200, clips=0)
    too_old = seed_media(
        container, home, profile=adult, days_ago=800, clips=0
    )  # adult voice: 730 d
    report = _sweep_and_erase(container)
    left = _items(container, home.household_id)
    assert {*kept["voice"], *kept["transcript"]} <= left
    # "never" never goes past the policy's maximum age (the published notice says so, A7).
    assert not {*too_old["voice"], *too_old["transcript"]} & left
    _assert_receipts(container, report)


def test_an_adult_choosing_3_months_has_older_recordings_erased(container: Container) -> None:
    home = make_home(container, tag="adult3m")
    adult = _adult(home)
    _choose(container, home, adult, "voice", "3m")
    old = seed_media(container, home, profile=adult, days_ago=100, clips=0)
    young = seed_media(container, home, profile=adult, days_ago=80, clips=0)
    report = _sweep_and_erase(container)
    left = _items(container, home.household_id)
    assert not {*old["voice"], *old["transcript"]} & left
    assert {*young["voice"], *young["transcript"]} <= left
    by = {(r.requester_kind, r.requested_by) for r in _requests(container)}
    assert ("auto_delete", "choice:auto-delete") in by
    _assert_receipts(container, report)


def test_a_childs_choice_shortens_but_never_lengthens_the_policy(
    container: Container, tmp_path: Path
) -> None:
    # A policy keeping a child's video a year, so that "3m" is shorter than the rule.
    path = tmp_path / "policy.toml"
    path.write_text(
        _policy_text(replace=(CHILD_VIDEO_90, CHILD_VIDEO_90[:-2] + "365")), encoding="utf-8"
    )
    container._policy = load_policy(path)
    home = make_home(container, tag="child3m")
    other = make_home(container, tag="child18m", child_name="Otto Lindqvist")
    child, other_child = home.child_profiles[0], other.child_profiles[0]
    _choose(container, home, child, "video", "3m")
    _choose(container, other, other_child, "video", "18m")
    clip = seed_media(container, home, days_ago=120, voices=0)
    other_clip = seed_media(container, other, days_ago=400, voices=0)
    report = _sweep_and_erase(container)
    assert not {*clip["video"], *clip["thumbnail"]} & _items(container, home.household_id)
    # 18 months chosen, but the policy says a year: the year wins (C9).
    assert not {*other_clip["video"], *other_clip["thumbnail"]} & _items(
        container, other.household_id
    )
    by = {(r.requester_kind, r.requested_by) for r in _requests(container)}
    assert ("auto_delete", "choice:auto-delete") in by
    assert ("retention", "rule:retention") in by
    _assert_receipts(container, report)
    with container.stores.session() as s:
        view = service.retention_view(
            s, container.policy, profile=s.get(Profile, (other.household_id, other_child))
        )
    video = next(k for k in view.kinds if k.kind == "video")
    assert video.effective_max_age == timedelta(days=365)
    assert video.decided_by == "policy"


def test_a_dry_run_reports_and_changes_nothing(container: Container) -> None:
    home = make_home(container, tag="dry")
    seed_media(container, home, days_ago=40)
    with container.stores.session() as s:
        s.add(
            ConsentContact(
                id=uuid7(),
                household_id=None,
                contact_sealed=b"x",
                created_at=container.clock.now() - timedelta(days=31),
                consented_at=None,
            )
        )
        s.commit()
    before = _items(container, home.household_id)
    report = run_sweep(container, dry_run=True)
    assert report.dry_run
    assert report.expired_items == 3
    assert report.requests == []
    assert report.consent_contacts_expired == 1
    container.erasure.run_pending()
    assert _items(container, home.household_id) == before
    assert _requests(container) == []
    with container.stores.session() as s:
        assert s.scalar(select(func.count()).select_from(ConsentContact)) == 1
        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.tag == AuditTag.RETENTION_SWEPT)
            )
            == 0
        )


def test_a_legal_hold_keeps_expired_items_and_counts_them(
    container: Container, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    held_home = make_home(container, tag="held")
    free_home = make_home(container, tag="free", child_name="Otto Lindqvist")
    seed_media(container, held_home, days_ago=40)
    free = seed_media(container, free_home, days_ago=40)
    expires = (clock.now() + timedelta(days=30)).date().isoformat()
    path = tmp_path / "held.toml"
    path.write_text(
        _policy_text(
            hold=(
                f'\n[[hold]]\nid = "case-1"\nhousehold = "{held_home.household_id}"\n'
                f'reason = "Preservation request"\nexpires = {expires}\n'
            )
        ),
        encoding="utf-8",
    )
    held_container = build(settings.model_copy(update={"retention_policy_file": path}), clock=clock)
    try:
        before = _items(held_container, held_home.household_id)
        report = run_sweep(held_container)
        held_container.erasure.run_pending(limit=100)
        assert report.expired_items == 6
        assert report.held == 3
        assert report.requests
        # One batch job, no household's own: the held home's items are not in it.
        assert {(r.scope_kind, r.household_id) for r in _requests(held_container)} == {
            ("batch", None)
        }
        assert _items(held_container, held_home.household_id) == before
        assert not set(free["voice"]) & _items(held_container, free_home.household_id)
        # Once the hold expires, the next sweep erases what it held.
        clock.advance(timedelta(days=31))
        after = run_sweep(held_container)
        assert after.held == 0
        held_container.erasure.run_pending(limit=100)
        _assert_receipts(held_container, after)
    finally:
        held_container.close()


def test_batches_make_several_requests_and_max_batches_stops_early(
    container: Container, batch_calls: list[tuple[Requester, list[Member]]]
) -> None:
    home = make_home(container, tag="batch")
    made = seed_media(container, home, voices=5, clips=0, days_ago=40)
    first = run_sweep(container, batch_size=2, max_batches=1)
    assert first.expired_items == 2
    assert len(first.requests) == 1
    assert [len(members) for _, members in batch_calls] == [2]
    batch_calls.clear()
    report = _sweep_and_erase(container, batch_size=2)
    # The 3 voice recordings the first sweep did not name and the location batch, in
    # batches of 2; the first request's 2 are not asked for again.
    assert report.expired_items == 4
    assert [len(members) for _, members in batch_calls] == [2, 2]
    assert len(report.requests) >= 2
    assert not {*made["voice"], *made["transcript"], *made["location"]} & _items(
        container, home.household_id
    )
    _assert_receipts(container, report)


def test_consent_contacts_without_consent_expire(container: Container) -> None:
    now = container.clock.now()
    rows = {
        "expired": (now - timedelta(days=31), None),
        "consented": (now - timedelta(days=31), now - timedelta(days=30)),
        "recent": (now - timedelta(days=5), None),
    }
    ids = {name: uuid7() for name in rows}
    with container.stores.session() as s:
        for name, (created, consented) in rows.items():
            s.add(
                ConsentContact(
                    id=ids[name],
                    household_id=None,
                    contact_sealed=b"x",
                    created_at=created,
                    consented_at=consented,
                )
            )
        s.commit()
    report = run_sweep(container, batch_size=1)
    assert report.consent_contacts_expired == 1
    with container.stores.session() as s:
        left = set(s.scalars(select(ConsentContact.id)))
    assert left == {ids["consented"], ids["recent"]}


def test_the_scheduled_sweep_runs_once_per_interval(container: Container, clock: FakeClock) -> None:
    home = make_home(container, tag="sched")
    seed_media(container, home, days_ago=40)
    first = scheduled_sweep(container)
    assert first >= 1
    container.erasure.run_pending(limit=100)
    seed_media(container, home, days_ago=40)
    assert scheduled_sweep(container) == 0  # not due yet
    clock.advance(timedelta(minutes=container.settings.retention_sweep_minutes))
    assert scheduled_sweep(container) == first
