"""Key epochs over the real stores: a destroyed key is unrecoverable from every copy of the
key store once the window has passed, and the receipt says so only then (S6, A8, C1).

Each test plays the auditor: it keeps what an attacker could keep (a dump or backup of the
key store taken before the erasure, PostgreSQL's dead tuples and raw pages after it) and
tries every key the key source still holds against it.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from tests import keyprobe
from tests.factories import make_home, seed_media, wav_bytes
from tutela.audit.models import AuditEvent
from tutela.container import Container
from tutela.core.errors import IntegrityFailure, KeyUnavailable
from tutela.erasure import receipts
from tutela.erasure.models import ErasureRequest, RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.households.models import Device, Profile
from tutela.vault import crypto, rotation
from tutela.vault import service as vault
from tutela.vault.keystore import profile_context
from tutela.vault.models import EpochState, KeyEpoch, ProfileKey
from tutela.vault.rotation import rotate_epoch

GUARDIAN = Requester(RequesterKind.GUARDIAN, "account:test")
HALF_WINDOW = timedelta(hours=12)


def _erase(container: Container, scope: Scope) -> ErasureRequest:
    row = container.erasure.request(scope, GUARDIAN)
    container.erasure.run_pending()
    with container.stores.session() as s:
        done = s.get(ErasureRequest, row.id)
        assert done is not None
        assert done.status == "completed", done.findings
        return done


def _fresh(container: Container, request_id: uuid.UUID) -> ErasureRequest:
    with container.stores.session() as s:
        row = s.get(ErasureRequest, request_id)
        assert row is not None
        return row


def _receipt(container: Container, request_id: uuid.UUID) -> dict[str, object]:
    row = _fresh(container, request_id)
    assert row.receipt is not None
    public = receipts.signing_key(container.vault.keys, now=container.clock.now()).public_key()
    return receipts.verify(row.receipt, public)


def _pass_the_window(container: Container) -> None:
    """Half a window later the workers' epoch pass rotates and destroys the old epoch."""
    container.clock.advance(HALF_WINDOW + timedelta(minutes=1))  # type: ignore[attr-defined]
    rotation = container.key_epoch_pass()
    assert rotation is not None and rotation.destroyed, "the epoch pass rotated"


def _name_sealed(container: Container, household_id: uuid.UUID, pid: uuid.UUID) -> bytes:
    with container.stores.session() as s:
        profile = s.get(Profile, (household_id, pid))
        assert profile is not None
        return profile.name_sealed


def _opens_name(key: bytes, household_id: uuid.UUID, pid: uuid.UUID, sealed: bytes) -> bool:
    try:
        crypto.open_sealed(
            key, sealed, aad=b"tutela:profile-name:" + household_id.bytes + pid.bytes
        )
    except IntegrityFailure:
        return False
    return True


def test_the_first_epoch_is_made_on_first_use_and_wraps_every_new_profile_key(
    container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique)
    epochs = container.vault.keys.epochs()
    assert [(e.seq, e.state) for e in epochs] == [(1, EpochState.CURRENT)]
    with container.stores.key_sessions() as k:
        rows = k.scalars(select(ProfileKey).where(ProfileKey.household_id == home.household_id))
        assert {(r.epoch_id, r.master_key_id, r.legacy) for r in rows} == {
            (epochs[0].id, None, False)
        }
    assert epochs[0].id in container.vault.keys.source.epoch_ids()


def test_a_childs_key_copies_unwrap_during_the_window_and_never_after(
    container: Container, unique: str, backend: str, tmp_path: Path
) -> None:
    """The auditor keeps a dump of the key store from before the erasure (and, on
    PostgreSQL, reads its dead tuples and raw pages after it). Until the epoch is destroyed
    the child's key unwraps from those copies and opens the child's name; the receipt
    claims only the live stores. After it, no key the source holds unwraps any copy, and
    the receipt, issued again, says every copy is unreadable since then."""
    home = make_home(container, tag=unique)
    seed_media(container, home)
    hh, child = home.household_id, home.child_profiles[0]
    adult = next(iter(home.adult_profiles.values()))
    sealed_name = _name_sealed(container, hh, child)
    keys = container.vault.keys
    if backend == "sqlite":
        backup = tmp_path / "keys-backup.db"
        with keys.sessions.kw["bind"].connect() as conn:
            conn.exec_driver_sql(f"VACUUM INTO '{backup}'")

        def copies() -> list[keyprobe.ProfileRow]:
            return keyprobe.sqlite_backup_rows(backup)[0]

    else:
        dump = keyprobe.dump_profile_rows(keys.sessions.kw["bind"])

        def copies() -> list[keyprobe.ProfileRow]:
            engine = keys.sessions.kw["bind"]
            return dump + keyprobe.pg_profile_rows(engine)

    done = _erase(container, Scope(ScopeKind.PROFILE, hh, profile_id=child))
    first = container.vault.keys.epochs()[0]

    # Inside the window: the copies still hold the key, and the receipt says no more than
    # the live stores.
    recovered = keyprobe.recover_profile_keys(copies(), keyprobe.live_keks(keys.source), child)
    assert recovered, "a copy of the erased child's key is still in the dump"
    assert _opens_name(recovered[0][0], hh, child, sealed_name)
    body = _receipt(container, done.id)
    unreadable = body["unreadable"]
    assert isinstance(unreadable, dict)
    assert unreadable["every_copy_at"] is None
    assert unreadable["every_copy_by"] == (first.started_at + keys.window).isoformat()
    assert unreadable["statement"].startswith("Unreadable in the live stores; every copy")
    assert unreadable["live_stores_at"] is not None
    check = body["remnant_check"]
    assert isinstance(check, dict)
    if backend == "postgresql":
        stale = check["stale_copies"]
        assert isinstance(stale, dict) and stale["key store"] > 0, "dead tuples were seen"
        with (
            keys.sessions.kw["bind"]
            .connect()
            .execution_options(isolation_level="AUTOCOMMIT") as conn
        ):
            conn.execute(text("VACUUM profile_keys"))
        raw = keyprobe.pg_raw_pages(keys.sessions.kw["bind"], "profile_keys")
        stale_bytes = [r.wrapped for r in dump if r.profile_id == child]
        assert any(w in raw for w in stale_bytes), "VACUUM left the bytes in free space"
    else:
        assert check["stale_copies"] is None

    _pass_the_window(container)

    assert keyprobe.recover_profile_keys(copies(), keyprobe.live_keks(keys.source), child) == []
    with pytest.raises(KeyUnavailable):
        keys.source.epoch_key(first.id)
    # The household's other profile lives on, under the new epoch.
    assert keys.profile_key(household_id=hh, profile_id=adult)
    after = _receipt(container, done.id)
    final = after["unreadable"]
    assert isinstance(final, dict)
    destroyed = container.vault.keys.epoch(first.seq)
    assert destroyed is not None and destroyed.destroyed_at is not None
    assert final["every_copy_at"] == destroyed.destroyed_at.isoformat()
    assert final["statement"].startswith("Unreadable everywhere")
    assert after["remnant_check"] == body["remnant_check"]
    assert _fresh(container, done.id).copies_unreadable_at == destroyed.destroyed_at


def test_an_erased_items_old_key_copy_is_unrecoverable_after_the_window(
    container: Container, unique: str, backend: str
) -> None:
    """One recording erased, its siblings kept: the profile key lives on, so its
    item-wrapping key is replaced before the epoch ends; no live or stale key then unwraps
    the erased item's key, and every sibling still plays."""
    home = make_home(container, tag=unique)
    made = seed_media(container, home, voices=3)
    hh, child = home.household_id, home.child_profiles[0]
    keys = container.vault.keys
    engine = keys.sessions.kw["bind"]
    profile_dump = keyprobe.dump_profile_rows(engine)
    item_dump = keyprobe.dump_item_rows(engine)
    erased, kept = made["voice"][0], [*made["voice"][1:], *made["video"], *made["location"]]

    done = _erase(container, Scope(ScopeKind.ITEM, hh, item_id=erased))
    with container.stores.key_sessions() as k:
        row = k.get(ProfileKey, (hh, child))
        assert row is not None and row.rekey_due and row.generation == 0

    def wrapping_keys() -> list[bytes]:
        rows = profile_dump + (keyprobe.pg_profile_rows(engine) if backend == "postgresql" else [])
        rows += keyprobe.dump_profile_rows(engine)
        found = keyprobe.recover_profile_keys(rows, keyprobe.live_keks(keys.source), child)
        return [items for _, items in found if items is not None]

    assert keyprobe.recover_item_key(item_dump, wrapping_keys(), erased) is not None
    assert _fresh(container, done.id).copies_unreadable_by is not None

    _pass_the_window(container)

    with container.stores.key_sessions() as k:
        row = k.get(ProfileKey, (hh, child))
        assert row is not None and not row.rekey_due and row.generation == 1
    assert keyprobe.recover_item_key(item_dump, wrapping_keys(), erased) is None
    for item_id in kept:
        assert keys.item_key(household_id=hh, item_id=item_id)
    reader = vault.Reader(household_id=hh, profile_ids=frozenset(home.child_profiles))
    with container.stores.session() as s:
        content = vault.open_content(s, container.vault, reader=reader, item_id=made["voice"][1])
        assert b"".join(content.chunks).startswith(b"RIFF")
    assert _fresh(container, done.id).copies_unreadable_at is not None


def test_items_stay_readable_across_rotations_uploads_and_erasures(
    container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique)
    hh, child = home.household_id, home.child_profiles[0]
    keys = container.vault.keys
    alive: list[uuid.UUID] = []
    for round_ in range(3):
        made = seed_media(container, home, voices=2)
        alive += [*made["voice"], *made["transcript"], *made["video"], *made["thumbnail"]]
        alive.append(made["location"][0])
        victim = made["voice"][0]
        _erase(container, Scope(ScopeKind.ITEM, hh, item_id=victim))
        alive = [i for i in alive if i not in (victim, made["transcript"][0])]
        _pass_the_window(container)
        assert [e.state for e in keys.epochs()][-1] == EpochState.CURRENT
        assert len(keys.source.epoch_ids()) == 1, f"round {round_}: old epochs destroyed"
        for item_id in alive:
            assert keys.item_key(household_id=hh, item_id=item_id)
    assert keys.profile_key(household_id=hh, profile_id=child)
    with container.stores.key_sessions() as k:
        row = k.get(ProfileKey, (hh, child))
        assert row is not None and row.generation == 3


def test_uploads_racing_a_rekey_all_stay_readable(container: Container, unique: str) -> None:
    """Uploads keep arriving while an erasure marks the profile and rotations replace its
    item-wrapping key: each new key lands under the generation it was wrapped with."""
    home = make_home(container, tag=unique)
    hh, child = home.household_id, home.child_profiles[0]
    seeded = seed_media(container, home, voices=1)
    device = next(d for d in _devices(container, hh) if d.kind == "voice")
    uploaded: list[uuid.UUID] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def upload() -> None:
        try:
            while not stop.is_set() and len(uploaded) < 60:
                with container.stores.session() as s:
                    item = vault.ingest_media(
                        s,
                        container.vault,
                        consent=container.consent,
                        device=device,
                        profile_id=child,
                        kind="voice",
                        declared_type="audio/wav",
                        captured_at=container.clock.now() - timedelta(minutes=1),
                        body=wav_bytes(0.05),
                        limits=container.limits,
                        now=container.clock.now(),
                    )
                    uploaded.append(item.id)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=upload)
    worker.start()
    try:
        victims = [*seeded["voice"]]
        for _ in range(4):
            if uploaded:
                victims.append(uploaded[0])
            container.vault.keys.destroy_item_keys(household_id=hh, item_ids=victims[-1:])
            rotate_epoch(container.vault.keys, clock=container.clock, force=True)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not errors, errors
    assert len(uploaded) > 5
    for item_id in uploaded:
        if item_id in victims:
            continue
        assert container.vault.keys.item_key(household_id=hh, item_id=item_id)


def _devices(container: Container, hh: uuid.UUID) -> list[Device]:
    with container.stores.session() as s:
        found = list(s.scalars(select(Device).where(Device.household_id == hh)))
        for d in found:
            s.expunge(d)
        return found


def _stalled_rotation(container: Container) -> rotation._Lease:
    """A worker that took the lease and began a new epoch, then stopped (killed, paused)."""
    keys = container.vault.keys
    held = rotation._take_lease(keys, owner="stalled", now=container.clock.now())
    assert held is not None
    lease = rotation._Lease(keys, "stalled", container.clock, held)
    rotation._begin(lease)
    return lease


def test_a_rotation_stopped_after_its_new_epoch_is_finished_by_the_next(
    container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique)
    made = seed_media(container, home)
    keys = container.vault.keys
    first = keys.current_epoch(now=container.clock.now())
    _stalled_rotation(container)
    assert [e.state for e in keys.epochs()] == [EpochState.RETIRING, EpochState.CURRENT]
    assert keys.item_key(household_id=home.household_id, item_id=made["voice"][0])
    assert rotate_epoch(keys, clock=container.clock) is None, "the dead worker's lease holds"
    container.clock.advance(timedelta(minutes=16))  # type: ignore[attr-defined]
    result = rotate_epoch(keys, clock=container.clock)  # due: a retiring epoch is left
    assert result is not None
    assert [e.seq for e in result.destroyed] == [first.seq]
    assert [e.state for e in keys.epochs()] == [EpochState.DESTROYED, EpochState.CURRENT]
    assert keys.source.epoch_ids() == [keys.epochs()[-1].id]
    assert keys.item_key(household_id=home.household_id, item_id=made["voice"][0])


def test_a_worker_that_lost_its_lease_changes_nothing_more(
    container: Container, unique: str
) -> None:
    """Worker A stalls past its lease; B takes over and finishes; a later rotation begins;
    A wakes up. A must neither re-wrap rows under its epoch nor destroy anything: every
    key stays readable and the next rotation still works."""
    home = make_home(container, tag=unique)
    made = seed_media(container, home)
    keys = container.vault.keys
    stalled = _stalled_rotation(container)
    container.clock.advance(timedelta(minutes=16))  # type: ignore[attr-defined]
    assert rotate_epoch(keys, clock=container.clock) is not None  # B finishes A's rotation
    container.clock.advance(HALF_WINDOW + timedelta(minutes=1))  # type: ignore[attr-defined]

    def a_wakes_up(_: object) -> None:
        # C has begun epoch 3; A still believes in epoch 2, now retiring under C.
        held_by_source = set(keys.source.epoch_ids())
        with pytest.raises(rotation.LeaseLost):
            rotation._rewrap_profiles(stalled, batch_size=500)
        with pytest.raises(rotation.LeaseLost):
            rotation.rekey_profile(
                stalled, household_id=home.household_id, profile_id=home.child_profiles[0]
            )
        assert rotation._destroy_retired(stalled, batch_size=500) == []
        assert set(keys.source.epoch_ids()) == held_by_source, "A destroyed nothing"

    keys.destroy_item_keys(household_id=home.household_id, item_ids=[made["voice"][0]])
    c = rotate_epoch(keys, clock=container.clock, before_destroy=a_wakes_up)
    assert c is not None and c.current.seq == 3 and [e.seq for e in c.destroyed] == [2]
    for item_id in made["voice"][1:] + made["video"]:
        assert keys.item_key(household_id=home.household_id, item_id=item_id)
    container.clock.advance(HALF_WINDOW + timedelta(minutes=1))  # type: ignore[attr-defined]
    assert rotate_epoch(keys, clock=container.clock) is not None


def test_processes_starting_together_make_one_current_epoch(
    container: Container, unique: str
) -> None:
    """Many workers start on a fresh key store at once: exactly one current epoch, and the
    key source keeps only its key."""
    keys = container.vault.keys
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def first_use() -> None:
        try:
            barrier.wait()
            keys.current_epoch(now=container.clock.now())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    epochs = keys.epochs()
    assert [e.state for e in epochs] == [EpochState.CURRENT]
    assert keys.source.epoch_ids() == [epochs[0].id]
    make_home(container, tag=unique)
    assert rotate_epoch(keys, clock=container.clock, force=True) is not None


def test_two_workers_never_rotate_at_once_and_nothing_is_due_early(
    container: Container, unique: str
) -> None:
    make_home(container, tag=unique)
    keys = container.vault.keys
    assert rotate_epoch(keys, clock=container.clock) is None, "not due before half a window"
    held = rotation._take_lease(keys, owner="other", now=container.clock.now())
    assert held is not None
    assert rotate_epoch(keys, clock=container.clock, force=True) is None, "lease held"
    container.clock.advance(timedelta(minutes=16))  # type: ignore[attr-defined]
    assert rotate_epoch(keys, clock=container.clock, force=True) is not None


def test_a_promise_past_its_time_is_recorded_as_overdue_once(
    container: Container, unique: str
) -> None:
    """Workers stopped: an erasure's "every copy unreadable by T" passes with its epoch
    still alive. That is recorded once, for the epoch, not at every pass."""
    home = make_home(container, tag=unique)
    done = _erase(
        container, Scope(ScopeKind.PROFILE, home.household_id, profile_id=home.child_profiles[0])
    )
    keys = container.vault.keys
    first = keys.current_epoch(now=container.clock.now())
    promised = _fresh(container, done.id).copies_unreadable_by
    assert promised is not None
    container.clock.set(promised + timedelta(minutes=1))  # type: ignore[attr-defined]
    with container.stores.key_sessions() as k:  # a stuck worker holds the rotation
        k.execute(
            update(KeyEpoch)
            .where(KeyEpoch.seq == first.seq)
            .values(rotating_until=container.clock.now() + timedelta(minutes=10))
        )
        k.commit()
    container.key_epoch_pass()
    container.key_epoch_pass()
    with container.stores.session() as s:
        events = s.scalars(
            select(AuditEvent.subject).where(AuditEvent.tag == "vault:key-epoch:overdue")
        ).all()
    assert events == [f"key-epoch:{first.seq}:overdue"]
    assert "every copy unreadable by" in _fresh_statement(container, done.id)


def test_a_key_destroyed_in_an_epoch_already_due_is_promised_half_a_window_from_now(
    container: Container, unique: str
) -> None:
    """An epoch begun under a clock set in the past (a demo's history) is due at once: a
    key destroyed in it is promised no time before the erasure itself."""
    home = make_home(container, tag=unique)
    keys = container.vault.keys
    first = keys.current_epoch(now=container.clock.now())
    container.clock.advance(timedelta(days=30))  # type: ignore[attr-defined]
    done = _erase(
        container, Scope(ScopeKind.PROFILE, home.household_id, profile_id=home.child_profiles[0])
    )
    row = _fresh(container, done.id)
    assert row.key_epoch == first.seq
    assert row.copies_unreadable_by == container.clock.now() + keys.window / 2
    assert container.key_epoch_pass() is not None  # due: it rotates at once
    assert _fresh(container, done.id).copies_unreadable_at == container.clock.now()
    with container.stores.session() as s:
        assert not s.scalars(
            select(AuditEvent.id).where(AuditEvent.tag == "vault:key-epoch:overdue")
        ).all()


def _fresh_statement(container: Container, request_id: uuid.UUID) -> str:
    from tutela.erasure import copies

    return copies.of_request(container.vault.keys, _fresh(container, request_id)).statement


def test_keys_from_before_epochs_get_no_promise_in_the_receipt(
    container: Container, unique: str
) -> None:
    """A row wrapped under the master key (a store from before key epochs): its older
    copies are not bounded by any epoch, and the receipt must not pretend they are."""
    home = make_home(container, tag=unique)
    hh, child = home.household_id, home.child_profiles[0]
    keys = container.vault.keys
    profile_key = keys.profile_key(household_id=hh, profile_id=child)
    master_id = keys.source.current_id()
    with container.stores.key_sessions() as k:
        k.execute(
            update(ProfileKey)
            .where(ProfileKey.household_id == hh, ProfileKey.profile_id == child)
            .values(
                wrapped=crypto.wrap_key(
                    keys.source.key(master_id), profile_key, context=profile_context(hh, child)
                ),
                epoch_id=None,
                master_key_id=master_id,
                items_wrapped=None,
            )
        )
        k.commit()
    assert keys.profile_key(household_id=hh, profile_id=child) == profile_key
    done = _erase(container, Scope(ScopeKind.PROFILE, hh, profile_id=child))
    unreadable = _receipt(container, done.id)["unreadable"]
    assert isinstance(unreadable, dict)
    assert unreadable["every_copy_by"] is None and unreadable["every_copy_at"] is None
    assert "no time bounds them" in unreadable["statement"]
    _pass_the_window(container)
    assert (
        json.loads(_fresh(container, done.id).receipt or "{}")["receipt"]["unreadable"][
            "every_copy_at"
        ]
        is None
    )


def test_the_first_rotation_rewraps_rows_from_before_epochs_and_marks_them(
    container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique)
    hh, adult = home.household_id, next(iter(home.adult_profiles.values()))
    keys = container.vault.keys
    key = keys.profile_key(household_id=hh, profile_id=adult)
    master_id = keys.source.current_id()
    with container.stores.key_sessions() as k:
        k.execute(
            update(ProfileKey)
            .where(ProfileKey.household_id == hh, ProfileKey.profile_id == adult)
            .values(
                wrapped=crypto.wrap_key(
                    keys.source.key(master_id), key, context=profile_context(hh, adult)
                ),
                epoch_id=None,
                master_key_id=master_id,
                items_wrapped=None,
            )
        )
        k.commit()
    rotate_epoch(keys, clock=container.clock, force=True)
    with container.stores.key_sessions() as k:
        row = k.get(ProfileKey, (hh, adult))
        assert row is not None
        assert (row.epoch_id, row.master_key_id, row.legacy) == (keys.epochs()[-1].id, None, True)
    assert keys.profile_key(household_id=hh, profile_id=adult) == key


def test_an_email_index_left_in_a_backup_answers_no_guess_after_the_window(
    container: Container, unique: str
) -> None:
    """A main-store backup (or a dead tuple) keeps the closed household's email index. With
    the key source, a guessed address can be checked against it until the epoch is
    destroyed, and not after; live accounts move to the new epoch and still sign in."""
    from tutela.households import service as households
    from tutela.households.models import Account

    closing = make_home(container, tag=unique)
    staying = make_home(container, tag=unique + "b")
    email = f"ana.{unique}@example.com"
    with container.stores.session() as s:
        backup = s.scalars(
            select(Account.email_index).where(Account.household_id == closing.household_id)
        ).all()
    keys = container.vault.keys
    now = container.clock.now

    def guess_matches() -> bool:
        return bool(set(households.email_indexes(keys, email, now=now())) & set(backup))

    assert guess_matches(), "during the window the backup's index answers a guess"
    _erase(container, Scope(ScopeKind.HOUSEHOLD, closing.household_id))
    _pass_the_window(container)
    assert not guess_matches()
    with container.stores.session() as s:
        account = households.find_account(s, keys, email=f"ana.{unique}b@example.com", now=now())
        assert account is not None and account.household_id == staying.household_id
        assert account.email_index_epoch == keys.epochs()[-1].seq


def test_a_closure_stopped_between_its_keys_and_its_rows_does_not_hold_up_the_epochs(
    container: Container, unique: str
) -> None:
    """A household's keys are gone but its rows are not yet (a worker waits on the blob
    store, say): the rotation moves every other account's email index and destroys the
    old epoch all the same."""
    from tutela.erasure.models import Step

    closing = make_home(container, tag=unique)
    staying = make_home(container, tag=unique + "b")
    row = container.erasure.request(Scope(ScopeKind.HOUSEHOLD, closing.household_id), GUARDIAN)
    container.erasure.run_request(row.id, until=Step.KEYS)
    rotation_ = container.rotate_key_epoch(force=True)
    assert rotation_ is not None and rotation_.destroyed
    from tutela.households import service as households

    with container.stores.session() as s:
        account = households.find_account(
            s, container.vault.keys, email=f"ana.{unique}b@example.com", now=container.clock.now()
        )
        assert account is not None and account.household_id == staying.household_id
    container.erasure.run_pending()
    assert _fresh(container, row.id).status == "completed"


def test_a_rotation_that_fails_still_records_a_broken_promise(
    container: Container, unique: str
) -> None:
    """A profile key under an epoch that no longer exists stops every rotation (an operator
    must look); the erasure receipts' promised time then passes, and that is recorded."""
    home = make_home(container, tag=unique)
    other = make_home(container, tag=unique + "b")
    done = _erase(
        container, Scope(ScopeKind.PROFILE, home.household_id, profile_id=home.child_profiles[0])
    )
    with container.stores.key_sessions() as k:
        k.execute(
            update(ProfileKey)
            .where(ProfileKey.household_id == other.household_id)
            .values(epoch_id="0000000000000000")
        )
        k.commit()
    promised = _fresh(container, done.id).copies_unreadable_by
    assert promised is not None
    container.clock.set(promised + timedelta(minutes=1))  # type: ignore[attr-defined]
    assert container.key_epoch_pass() is None  # the rotation failed
    with container.stores.session() as s:
        events = s.scalars(
            select(AuditEvent.subject).where(AuditEvent.tag == "vault:key-epoch:overdue")
        ).all()
    assert events == [f"key-epoch:{_fresh(container, done.id).key_epoch}:overdue"]


def test_one_address_signing_up_twice_across_a_rotation_gets_one_account(
    container: Container, unique: str
) -> None:
    """Sign-up A has checked its address and not committed; an epoch begins; sign-up B of
    the same address waits for A, then is refused: never two accounts of one address
    (which would also stop every later email re-index)."""
    from tests.factories import password_hash
    from tutela.core.errors import Conflict
    from tutela.households import service as households
    from tutela.households.models import Account, AccountRole
    from tutela.households.service import AdultSpec, HomeSpec

    def spec() -> HomeSpec:
        return HomeSpec(
            adults=(
                AdultSpec(
                    "Ana",
                    f"twice.{unique}@example.com",
                    password_hash(container),
                    AccountRole.OWNER,
                ),
            )
        )

    outcome: list[BaseException | None] = []
    rotated: list[object] = []
    first = container.stores.session()
    households.create_home(
        first, container.vault.keys, spec=spec(), now=container.clock.now(), commit=False
    )

    def rotate() -> None:
        rotated.append(container.rotate_key_epoch(force=True))

    def second() -> None:
        try:
            with container.stores.session() as s:
                households.create_home(
                    s, container.vault.keys, spec=spec(), now=container.clock.now()
                )
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    r = threading.Thread(target=rotate)
    r.start()
    r.join(timeout=1)
    assert r.is_alive(), "the rotation waits for the sign-up still on the old epoch"
    b = threading.Thread(target=second)
    b.start()
    b.join(timeout=1)
    assert b.is_alive(), "the second sign-up waits for the first"
    first.commit()
    first.close()
    r.join(timeout=30)
    b.join(timeout=30)
    assert rotated and rotated[0] is not None
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict)
    with container.stores.session() as s:
        matches = households.email_indexes(
            container.vault.keys, f"twice.{unique}@example.com", now=container.clock.now()
        )
        found = s.scalars(select(Account).where(Account.email_index.in_(matches))).all()
        assert len(found) == 1
        assert found[0].email_index_epoch == container.vault.keys.epochs()[-1].seq


def test_a_notice_naming_a_child_dies_with_the_childs_keys(
    container: Container, unique: str
) -> None:
    """The inactive-child notice names the child to a guardian. Its parameters are sealed
    under the child's key, not the guardian's: a copy of the outbox row (a backup, a dead
    tuple) stops opening with the child's erasure, though the guardian's key lives on."""
    from tutela.households.models import Account
    from tutela.identity.owners import Owner
    from tutela.notices.models import OutboxMessage
    from tutela.notices.service import NoticeKind, enqueue

    home = make_home(container, tag=unique, child_name="Lily Marchetti")
    hh, child = home.household_id, home.child_profiles[0]
    keys = container.vault.keys
    with container.stores.session() as s:
        guardian = s.scalars(select(Account).where(Account.household_id == hh)).first()
        assert guardian is not None
        owner = Owner.account(hh, guardian.id, guardian.profile_id)
        notice_id = enqueue(
            s,
            keys,
            kind=NoticeKind.INACTIVE_CHILD,
            owner=owner,
            params={
                "at": container.clock.now().isoformat(),
                "profile": "Lily Marchetti",
                "erase_on": "2027-03-01",
            },
            now=container.clock.now(),
            about_profile_id=child,
        )
        s.commit()
        backup = s.get(OutboxMessage, notice_id)
        assert backup is not None
        sealed = backup.params_sealed

    def opens(key: bytes) -> bool:
        aad = (
            b"tutela:notice:"
            + notice_id.bytes
            + f":inactive_child:{owner.ref}".encode()
            + b":about:"
            + child.bytes
        )
        try:
            return b"Lily Marchetti" in crypto.open_sealed(key, sealed, aad=aad)
        except IntegrityFailure:
            return False

    assert opens(keys.profile_key(household_id=hh, profile_id=child))
    assert not opens(keys.profile_key(household_id=hh, profile_id=guardian.profile_id))
    _erase(container, Scope(ScopeKind.PROFILE, hh, profile_id=child))
    _pass_the_window(container)
    guardian_key = keys.profile_key(household_id=hh, profile_id=guardian.profile_id)
    assert not opens(guardian_key)
    assert all(not opens(k) for k in keyprobe.live_keks(keys.source))
