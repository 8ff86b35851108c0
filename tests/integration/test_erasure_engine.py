"""The erasure engine over the real stores: every scope, end to end (A5, A8, C1, C6, C10, S6)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.factories import make_home, seed_media
from tutela.audit.models import AuditEvent
from tutela.container import Container
from tutela.core.errors import Conflict, KeyUnavailable
from tutela.erasure import receipts
from tutela.erasure.models import ErasureRequest, RequesterKind, ScopeKind, Step
from tutela.erasure.scope import Requester, Scope
from tutela.households.models import Household, Profile
from tutela.vault.models import MediaItem

GUARDIAN = Requester(RequesterKind.GUARDIAN, "account:test")


def _run(container: Container, row: ErasureRequest) -> ErasureRequest:
    container.erasure.run_pending()
    with container.stores.session() as s:
        done = s.get(ErasureRequest, row.id)
        assert done is not None
        return done


def _items(container: Container, household_id: uuid.UUID) -> set[uuid.UUID]:
    with container.stores.session() as s:
        return set(s.scalars(select(MediaItem.id).where(MediaItem.household_id == household_id)))


def _readable(container: Container, household_id: uuid.UUID, item_id: uuid.UUID) -> bool:
    try:
        container.vault.keys.item_key(household_id=household_id, item_id=item_id)
    except KeyUnavailable:
        return False
    return True


def _blobs(container: Container) -> set[str]:
    return set(container.vault.blobs.keys(""))


def test_one_item_goes_with_its_transcript_and_nothing_else(container: Container) -> None:
    home = make_home(container, tag="one")
    made = seed_media(container, home)
    before = _items(container, home.household_id)
    voice, transcript = made["voice"][0], made["transcript"][0]
    row = container.erasure.request(
        Scope(ScopeKind.ITEM, home.household_id, item_id=voice), GUARDIAN
    )
    done = _run(container, row)
    assert done.status == "completed", done.findings
    assert _items(container, home.household_id) == before - {voice, transcript}
    assert not _readable(container, home.household_id, voice)
    assert _readable(container, home.household_id, made["voice"][1])
    body = receipts.verify(
        json.loads(done.receipt or "{}"),
        receipts.signing_key(container.vault.keys, now=container.clock.now()).public_key(),
    )
    assert body["counts"] == {"voice": 1, "transcript": 1}
    assert body["remnant_check"]["result"] == "clean"
    # An item's rows are read by `mark`: there is no `collect` step for it.
    assert set(body["steps"]) == {s.value for s in Step if s not in (Step.DONE, Step.COLLECT)}
    assert done.scope_sealed is None and done.fingerprints_sealed is None


def test_items_by_kind_leave_other_kinds(container: Container) -> None:
    home = make_home(container, tag="kinds")
    made = seed_media(container, home)
    row = container.erasure.request(
        Scope(
            ScopeKind.ITEMS, home.household_id, profile_id=home.child_profiles[0], kinds=("voice",)
        ),
        GUARDIAN,
    )
    done = _run(container, row)
    assert done.status == "completed", done.findings
    left = _items(container, home.household_id)
    assert not left & set(made["voice"] + made["transcript"])
    assert set(made["video"] + made["thumbnail"] + made["location"]) <= left


def test_a_profile_erasure_removes_profile_items_keys_and_blobs(container: Container) -> None:
    home = make_home(container, tag="prof")
    child = home.child_profiles[0]
    seed_media(container, home)
    adult = next(iter(home.adult_profiles.values()))
    kept = seed_media(container, home, profile=adult, voices=1, clips=0)
    row = container.erasure.request(
        Scope(ScopeKind.PROFILE, home.household_id, profile_id=child), GUARDIAN
    )
    done = _run(container, row)
    assert done.status == "completed", done.findings
    with container.stores.session() as s:
        assert s.get(Profile, (home.household_id, child)) is None
    assert _items(container, home.household_id) == set(
        kept["voice"] + kept["transcript"] + kept["location"]
    )
    assert not any(k.startswith(f"{home.household_id}/{child}") for k in _blobs(container))


def test_a_household_erasure_leaves_no_row_key_or_blob(container: Container) -> None:
    home = make_home(container, tag="hh", second_adult=True)
    other = make_home(container, tag="other")
    seed_media(container, home)
    seed_media(container, other, voices=1, clips=0)
    row = container.erasure.request(
        Scope(ScopeKind.HOUSEHOLD, home.household_id),
        Requester(RequesterKind.ACCOUNT_CLOSURE, "account:x"),
    )
    done = _run(container, row)
    assert done.status == "completed", done.findings
    with container.stores.session() as s:
        assert s.get(Household, home.household_id) is None
        assert s.get(Household, other.household_id) is not None
        assert done.household_id is None
    assert _items(container, home.household_id) == set()
    assert len(_items(container, other.household_id)) == 3
    assert not any(k.startswith(str(home.household_id)) for k in _blobs(container))
    assert container.vault.keys.remaining_keys(household_id=home.household_id) == 0


def test_a_profile_with_an_account_is_closed_with_the_household(container: Container) -> None:
    home = make_home(container, tag="acct")
    adult = next(iter(home.adult_profiles.values()))
    with pytest.raises(Conflict) as refused:
        container.erasure.request(
            Scope(ScopeKind.PROFILE, home.household_id, profile_id=adult), GUARDIAN
        )
    assert refused.value.code == "profile_has_account"


def test_the_same_idempotency_key_answers_the_first_request(container: Container) -> None:
    home = make_home(container, tag="idem")
    made = seed_media(container, home)
    scope = Scope(ScopeKind.ITEM, home.household_id, item_id=made["voice"][0])
    first = container.erasure.request(scope, GUARDIAN, idempotency_key="k1")
    again = container.erasure.request(scope, GUARDIAN, idempotency_key="k1")
    assert again.id == first.id
    other = Scope(ScopeKind.ITEM, home.household_id, item_id=made["voice"][1])
    with pytest.raises(Conflict) as reused:
        container.erasure.request(other, GUARDIAN, idempotency_key="k1")
    assert reused.value.code == "idempotency_key_reused"
    with container.stores.session() as s:
        assert s.scalar(select(func.count()).select_from(ErasureRequest)) == 1


def test_a_blob_that_reappears_is_found_and_erased_again(container: Container) -> None:
    """A8: the remnant check refuses completion while a copy remains; the steps rerun."""
    home = make_home(container, tag="reappear")
    made = seed_media(container, home, clips=0)
    voice = made["voice"][0]
    with container.stores.session() as s:
        item = s.get(MediaItem, (home.household_id, voice))
        assert item is not None and item.blob_key is not None
        blob_key = item.blob_key
    copy = container.vault.blobs.read_at(blob_key, 0, container.vault.blobs.size(blob_key))

    def put_back(_request_id: uuid.UUID, step: Step) -> None:
        if step is Step.TOMBSTONES and not container.vault.blobs.exists(blob_key):
            container.vault.blobs.write(blob_key, [copy])

    container.erasure.after_step = put_back
    row = container.erasure.request(
        Scope(ScopeKind.ITEM, home.household_id, item_id=voice), GUARDIAN
    )
    container.erasure.run_pending()
    with container.stores.session() as s:
        first = s.get(ErasureRequest, row.id)
        assert first is not None
        assert first.status != "completed"
        assert first.findings is not None and "blob store" in first.findings
    container.erasure.after_step = None
    container.clock.advance(timedelta(minutes=1))
    done = _run(container, row)
    assert done.status == "completed"
    assert done.verify_failures == 1
    assert not container.vault.blobs.exists(blob_key)


@pytest.mark.parametrize("form", ["hex", "hyphenated"])
def test_an_id_left_in_the_sqlite_file_keeps_the_request_open(
    container: Container, backend: str, form: str
) -> None:
    """The raw scan reads the database file itself: a stray copy of an erased id counts,
    as SQLite keeps a UUID (32 hex digits) or as a blob key holds it."""
    if backend != "sqlite":
        pytest.skip("the raw scan reads the embedded store's files")
    home = make_home(container, tag="stray")
    made = seed_media(container, home, clips=0)
    voice = made["voice"][0]

    def leave_copy(_request_id: uuid.UUID, step: Step) -> None:
        if step is Step.ROWS:
            with container.stores.session() as s:
                s.add(
                    AuditEvent(
                        id=uuid.uuid4(),
                        at=container.clock.now(),
                        tag="test:copy",
                        actor="test",
                        subject=voice.hex if form == "hex" else f"copy:{voice}",
                    )
                )
                s.commit()

    container.erasure.after_step = leave_copy
    row = container.erasure.request(
        Scope(ScopeKind.ITEM, home.household_id, item_id=voice), GUARDIAN
    )
    for _ in range(4):
        container.erasure.run_pending()
        container.clock.advance(timedelta(minutes=1))
    with container.stores.session() as s:
        done = s.get(ErasureRequest, row.id)
        assert done is not None
        assert done.status == "failed"
        assert done.receipt is None
        assert "main database file" in (done.findings or "")


def test_an_upload_racing_a_partial_erasure_goes_with_it_keys_first(
    container: Container,
) -> None:
    """A recording captured before "delete all voice" but uploaded while it runs is
    erased with it: its key before its blob and row, and the receipt counts it (A5)."""
    from tests.factories import home_device, wav_bytes
    from tutela.vault import service as vault

    home = make_home(container, tag="race")
    child = home.child_profiles[0]
    seed_media(container, home, clips=0)
    voice_device = home_device(container, home, "voice")
    late: list[uuid.UUID] = []

    def upload_during(_request_id: uuid.UUID, step: Step) -> None:
        if step is Step.KEYS and not late:
            now = container.clock.now()
            with container.stores.session() as s:
                item = vault.ingest_media(
                    s, container.vault, consent=container.consent, device=voice_device,
                    profile_id=child, kind="voice",
                    declared_type="audio/wav", captured_at=now - timedelta(minutes=1),
                    body=wav_bytes(0.2), limits=container.limits, now=now,
                )  # fmt: skip
            late.append(item.id)

    container.erasure.after_step = upload_during
    container.clock.advance(timedelta(minutes=5))
    row = container.erasure.request(
        Scope(ScopeKind.ITEMS, home.household_id, profile_id=child, kinds=("voice",)), GUARDIAN
    )
    done = _run(container, row)
    assert done.status == "completed", done.findings
    assert late and late[0] not in _items(container, home.household_id)
    assert not _readable(container, home.household_id, late[0])
    assert not any(str(late[0]) in k for k in _blobs(container))
    assert json.loads(done.counts)["voice"] == 3
    steps = json.loads(done.step_times)
    assert "keys" in steps


def test_an_idempotency_key_reused_after_completion_is_still_refused(
    container: Container,
) -> None:
    home = make_home(container, tag="reuse")
    made = seed_media(container, home, clips=0)
    first = Scope(ScopeKind.ITEM, home.household_id, item_id=made["voice"][0])
    row = container.erasure.request(first, GUARDIAN, idempotency_key="same")
    assert _run(container, row).status == "completed"
    assert container.erasure.request(first, GUARDIAN, idempotency_key="same").id == row.id
    other = Scope(ScopeKind.ITEM, home.household_id, item_id=made["voice"][1])
    with pytest.raises(Conflict) as reused:
        container.erasure.request(other, GUARDIAN, idempotency_key="same")
    assert reused.value.code == "idempotency_key_reused"
    assert _readable(container, home.household_id, made["voice"][1])


def test_closing_a_household_keeps_which_employee_asked(container: Container) -> None:
    """The household's own accounts vanish from the audit trail; an officer stays named."""
    home = make_home(container, tag="officer")
    officer = Requester(RequesterKind.PRIVACY_OFFICER, "staff:0000-officer")
    row = container.erasure.request(Scope(ScopeKind.HOUSEHOLD, home.household_id), officer)
    done = _run(container, row)
    assert done.status == "completed"
    assert done.requested_by == "staff:0000-officer"
    with container.stores.session() as s:
        actors = set(s.scalars(select(AuditEvent.actor)))
    assert "staff:0000-officer" in actors
    assert not any(str(a) in actor for a in home.accounts.values() for actor in actors)
