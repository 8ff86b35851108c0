"""Ephemeral voice through the retention sweep on the real stores (C11): its row and
transcript are erased through the erasure engine, with a receipt, once the policy's
`[ephemeral_voice]` age has passed, and not before; other items are untouched; legal
holds and dry runs are honoured; the selection reads only the partial index."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, text

from tests.factories import home_device, make_home, seed_media, wav_bytes
from tutela.container import Container, build
from tutela.core.clock import FakeClock
from tutela.db.engine import explain
from tutela.erasure.models import ErasureRequest, RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.households.service import CreatedHome
from tutela.retention.ephemeral import expired_page
from tutela.retention.policy import default_policy_path
from tutela.retention.sweep import run_sweep
from tutela.settings import Settings
from tutela.vault import service as vault
from tutela.vault.models import MediaItem


def _ephemeral_request(container: Container, home: CreatedHome) -> tuple[uuid.UUID, uuid.UUID]:
    """A child's voice request used in place of typing, and its transcript: (voice, text)."""
    device = home_device(container, home, "voice")
    now = container.clock.now()
    with container.stores.session() as s:
        voice = vault.ingest_media(
            s,
            container.vault,
            consent=container.consent,
            device=device,
            profile_id=home.child_profiles[0],
            kind="voice",
            declared_type="audio/wav",
            captured_at=now - timedelta(seconds=5),
            body=wav_bytes(0.3),
            limits=container.limits,
            now=now,
            ephemeral=True,
        )
        transcript = vault.ingest_transcript(
            s,
            container.vault,
            consent=container.consent,
            device=device,
            source_item_id=voice.id,
            text="what does a stegosaurus eat",
            language="en",
            now=now,
        )
    return voice.id, transcript.id


def _items(container: Container, household_id: uuid.UUID) -> set[uuid.UUID]:
    with container.stores.session() as s:
        return set(s.scalars(select(MediaItem.id).where(MediaItem.household_id == household_id)))


def _request_rows(container: Container) -> list[ErasureRequest]:
    with container.stores.session() as s:
        return list(s.scalars(select(ErasureRequest)))


def test_the_transcript_is_erased_after_24_hours_with_a_receipt(
    container: Container, clock: FakeClock
) -> None:
    home = make_home(container, tag="eph")
    voice, transcript = _ephemeral_request(container, home)
    kept = seed_media(container, home, days_ago=0, clips=0)  # a recording kept as usual
    with container.stores.session() as s:
        row = s.get(MediaItem, (home.household_id, transcript))
        assert row is not None and row.ephemeral  # the transcript is ephemeral too
    clock.advance(timedelta(hours=23, minutes=59))
    early = run_sweep(container)
    assert early.ephemeral_expired == 0 and early.requests == []
    assert {voice, transcript} <= _items(container, home.household_id)

    clock.advance(timedelta(minutes=2))
    report = run_sweep(container)
    # The transcript goes with its recording's row: one item named, both erased.
    assert report.ephemeral_expired == 1
    assert report.expired_items == 0
    assert "ephemeral voice past its age: 1 (0 under a legal hold)" in report.lines()
    container.erasure.run_pending(limit=100)
    left = _items(container, home.household_id)
    assert not {voice, transcript} & left
    assert {i for ids in kept.values() for i in ids} <= left
    rows = _request_rows(container)
    assert [(r.requester_kind, r.requested_by, r.scope_kind) for r in rows] == [
        ("retention", "rule:ephemeral-voice", "batch")
    ]
    assert rows[0].status == "completed", rows[0].findings
    assert rows[0].receipt is not None
    assert run_sweep(container).ephemeral_expired == 0


def test_a_dry_run_counts_and_erases_nothing(container: Container, clock: FakeClock) -> None:
    home = make_home(container, tag="ephdry")
    voice, transcript = _ephemeral_request(container, home)
    clock.advance(timedelta(hours=25))
    report = run_sweep(container, dry_run=True)
    assert report.ephemeral_expired == 1 and report.requests == []
    assert _request_rows(container) == []
    assert {voice, transcript} <= _items(container, home.household_id)


def test_a_transcript_left_after_its_recording_was_erased_still_expires(
    container: Container, clock: FakeClock
) -> None:
    """A transcript whose recording is gone is named on its own, and goes too."""
    home = make_home(container, tag="ephorphan")
    voice, transcript = _ephemeral_request(container, home)
    with container.stores.session() as s:
        # As if the recording's row had been erased on its own: the transcript remains.
        s.execute(
            MediaItem.__table__.update()
            .where(MediaItem.household_id == home.household_id, MediaItem.id == transcript)
            .values(source_item_id=None)
        )
        s.commit()
    clock.advance(timedelta(hours=25))
    report = run_sweep(container)
    assert report.ephemeral_expired == 2
    container.erasure.run_pending(limit=100)
    assert not {voice, transcript} & _items(container, home.household_id)


def _container_with_policy(
    settings: Settings, clock: FakeClock, tmp_path: Path, text_: str
) -> Container:
    path = tmp_path / "policy.toml"
    path.write_text(text_, encoding="utf-8")
    return build(settings.model_copy(update={"retention_policy_file": path}), clock=clock)


def test_the_age_comes_from_the_policy_file(
    container: Container, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    home = make_home(container, tag="eph2h")
    voice, _ = _ephemeral_request(container, home)
    policy = default_policy_path().read_text(encoding="utf-8")
    assert "transcript_max_age_hours = 24" in policy
    short = _container_with_policy(
        settings,
        clock,
        tmp_path,
        policy.replace("transcript_max_age_hours = 24", "transcript_max_age_hours = 2"),
    )
    try:
        clock.advance(timedelta(hours=1))
        assert run_sweep(short).ephemeral_expired == 0
        clock.advance(timedelta(hours=1, seconds=1))
        report = run_sweep(short)
        assert report.ephemeral_expired == 1
        short.erasure.run_pending(limit=100)
        assert voice not in _items(short, home.household_id)
    finally:
        short.close()


def test_a_legal_hold_keeps_ephemeral_voice_and_counts_it(
    container: Container, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    held_home = make_home(container, tag="ephheld")
    free_home = make_home(container, tag="ephfree", child_name="Otto Lindqvist")
    held = _ephemeral_request(container, held_home)
    free = _ephemeral_request(container, free_home)
    expires = (clock.now() + timedelta(days=30)).date().isoformat()
    policy = default_policy_path().read_text(encoding="utf-8") + (
        f'\n[[hold]]\nid = "case-1"\nhousehold = "{held_home.household_id}"\n'
        f'reason = "Preservation request"\nexpires = {expires}\n'
    )
    with_hold = _container_with_policy(settings, clock, tmp_path, policy)
    try:
        clock.advance(timedelta(hours=25))
        report = run_sweep(with_hold)
        assert report.ephemeral_expired == 2 and report.ephemeral_held == 1
        with_hold.erasure.run_pending(limit=100)
        assert set(held) <= _items(with_hold, held_home.household_id)
        assert not set(free) & _items(with_hold, free_home.household_id)
    finally:
        with_hold.close()


def test_the_selection_reads_the_partial_index(container: Container, backend: str) -> None:
    """Ephemeral items are found through `ix_items_ephemeral`, never a scan of `items`."""
    cutoff = container.clock.now()
    page = expired_page(cutoff, (cutoff - timedelta(hours=1), uuid.uuid4(), uuid.uuid4()), 500)
    with container.stores.main.connect() as conn:
        if backend == "postgresql":
            for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
                conn.execute(text(f"SET LOCAL {setting} = off"))
        plan = "\n".join(explain(conn, page))
        conn.rollback()
    assert "ix_items_ephemeral" in plan, plan
    assert "SCAN items" not in plan and "Seq Scan on items" not in plan, plan


def test_a_parent_can_erase_it_before_then_and_the_remnant_check_passes(
    container: Container,
) -> None:
    """The row has no key and no blob: the one deletion path erases it all the same."""
    home = make_home(container, tag="ephparent")
    voice, transcript = _ephemeral_request(container, home)
    row = container.erasure.request(
        Scope(ScopeKind.ITEM, home.household_id, item_id=voice),
        Requester(RequesterKind.GUARDIAN, "account:test"),
    )
    container.erasure.run_pending(limit=10)
    with container.stores.session() as s:
        done = s.get(ErasureRequest, row.id)
        assert done is not None and done.status == "completed", done.findings if done else None
        assert done.receipt is not None
    assert not {voice, transcript} & _items(container, home.household_id)
