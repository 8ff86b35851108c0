"""The key hierarchy on both stores: keys kept apart, cryptographic erase, rotation (S6, R8)."""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from tests.factories import make_home, past, wav_bytes
from tutela.container import Container
from tutela.core.errors import ConfigurationError, KeyUnavailable
from tutela.erasure import rawscan
from tutela.households import service as households
from tutela.households.models import Profile
from tutela.vault import crypto, service
from tutela.vault.keysource import FileKeySource, StaticKeySource
from tutela.vault.keystore import KeyStore
from tutela.vault.models import ProfileKey, ServiceKey
from tutela.vault.rotation import rotate_master


def _voice(container: Container, home: households.CreatedHome) -> uuid.UUID:
    from datetime import datetime

    with container.stores.session() as s:
        device = households.authenticate_device(
            s, token=next(iter(home.device_tokens.values())), now=container.clock.now()
        )
        item = service.ingest_media(
            s,
            container.vault,
            consent=container.consent,
            device=device,
            profile_id=home.child_profiles[0],
            kind="voice",
            declared_type="audio/wav",
            captured_at=datetime.fromisoformat(past(container)),
            body=[wav_bytes(0.3)],
            limits=container.limits,
            now=container.clock.now(),
        )
        return item.id


def _read(container: Container, home: households.CreatedHome, item_id: uuid.UUID) -> bytes:
    reader = service.Reader(
        household_id=home.household_id, profile_ids=frozenset(home.child_profiles)
    )
    with container.stores.session() as s:
        content = service.open_content(s, container.vault, reader=reader, item_id=item_id)
        return b"".join(content.chunks)


def test_destroying_an_item_key_makes_that_item_unreadable_at_once(
    container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique)
    kept, erased = _voice(container, home), _voice(container, home)
    container.vault.keys.destroy_item_keys(household_id=home.household_id, item_ids=[erased])
    with pytest.raises(KeyUnavailable):
        _read(container, home, erased)
    assert _read(container, home, kept).startswith(b"RIFF")


def test_destroying_a_profile_key_erases_every_item_and_the_name(
    container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique)
    item = _voice(container, home)
    child = home.child_profiles[0]
    assert container.vault.keys.destroy_profile_key(
        household_id=home.household_id, profile_id=child
    )
    with pytest.raises(KeyUnavailable):
        _read(container, home, item)
    with container.stores.session() as s:
        profile = s.get(Profile, (home.household_id, child))
        assert profile is not None
        with pytest.raises(KeyUnavailable):
            households.profile_view(container.vault.keys, profile)


def test_the_main_database_holds_no_usable_key(container: Container, unique: str) -> None:
    home = make_home(container, tag=unique)
    _voice(container, home)
    with container.stores.key_sessions() as k:
        wrapped = k.scalars(select(ProfileKey.wrapped)).all()
    assert wrapped
    main_tables = set(inspect(container.stores.main).get_table_names())
    key_tables = set(inspect(container.stores.keys).get_table_names())
    assert {"profile_keys", "item_keys", "service_keys"} <= key_tables
    assert not main_tables & {"profile_keys", "item_keys", "service_keys"}


def test_rotating_the_master_key_rewraps_profiles_and_keeps_every_item_readable(
    container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique)
    item = _voice(container, home)
    blob = Path(container.settings.blob_path)
    blobs_before = {p: p.read_bytes() for p in blob.rglob("*") if p.is_file()}
    source = container.vault.keys.source
    old = source.current_id()
    result = rotate_master(container.vault.keys, batch_size=1)
    assert result.new_master_key_id != old
    assert result.retired == [old]
    assert source.key_ids() == [result.new_master_key_id]
    with container.stores.key_sessions() as k:
        # Service keys move to the new master; profile keys stay under their key epoch,
        # whose key the source now keeps sealed under the new master.
        assert set(k.scalars(select(ServiceKey.master_key_id))) == {result.new_master_key_id}
        assert set(k.scalars(select(ProfileKey.master_key_id))) == {None}
        epochs = set(k.scalars(select(ProfileKey.epoch_id)))
    assert len(epochs) == 1 and epochs <= set(source.epoch_ids())
    sealed = json.loads(container.settings.epoch_file.read_text())["epochs"]
    assert {e["master"] for e in sealed} == {result.new_master_key_id}
    # Blobs untouched, data readable, sign-in (email index) still works.
    assert {p: p.read_bytes() for p in blob.rglob("*") if p.is_file()} == blobs_before
    assert _read(container, home, item).startswith(b"RIFF")
    with container.stores.session() as s:
        assert households.find_account(
            s, container.vault.keys, email=f"ana.{unique}@example.com", now=container.clock.now()
        )


def test_an_interrupted_rotation_is_finished_by_running_it_again(
    container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique)
    item = _voice(container, home)
    source = container.vault.keys.source
    old = source.current_id()
    new = source.begin_rotation()  # as if a rotation stopped before re-wrapping anything
    assert set(source.key_ids()) == {old, new}
    assert _read(container, home, item).startswith(b"RIFF"), "readable mid-rotation"
    result = rotate_master(container.vault.keys)
    assert result.new_master_key_id == new
    assert result.retired == [old]
    assert _read(container, home, item).startswith(b"RIFF")


def test_a_retired_master_key_cannot_be_used(container: Container, unique: str) -> None:
    make_home(container, tag=unique)
    source = container.vault.keys.source
    old = source.current_id()
    rotate_master(container.vault.keys)
    with pytest.raises(KeyUnavailable):
        source.key(old)


def test_the_key_file_is_created_private_and_refused_when_not(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    source = FileKeySource(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(source.key(source.current_id())) == 32
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError) as info:
        FileKeySource(path)
    assert info.value.code == "key_file_mode"
    assert base64.b64decode(json.loads(path.read_text())["keys"][0]["key"]) == source.key(
        source.current_id()
    )


def test_a_master_key_from_the_environment_works_and_refuses_rotation(container: Container) -> None:
    encoded = base64.b64encode(crypto.new_key()).decode()
    source = StaticKeySource(encoded, container.settings.home / "static-epochs.key")
    store = KeyStore(container.stores.key_sessions, source)
    hh, pid = uuid.uuid4(), uuid.uuid4()
    key = store.create_profile_key(household_id=hh, profile_id=pid, now=container.clock.now())
    assert store.profile_key(household_id=hh, profile_id=pid) == key
    with pytest.raises(ConfigurationError):
        rotate_master(store)
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(ConfigurationError):
            StaticKeySource(bad, container.settings.home / "static-epochs.key")


def test_a_destroyed_key_leaves_no_copy_in_the_key_store_files(
    container: Container, unique: str, backend: str
) -> None:
    """secure_delete zeroes the database page; the WAL's old copy must go too (S6, C1)."""
    if backend != "sqlite":
        pytest.skip("PostgreSQL's files are the server's; this checks the embedded store")
    home = make_home(container, tag=unique)
    _voice(container, home)
    child = home.child_profiles[0]
    with container.stores.key_sessions() as k:
        row = k.get(ProfileKey, (home.household_id, child))
        assert row is not None
        wrapped = row.wrapped
    db = Path(str(container.stores.keys.url.database))
    files = [db, Path(f"{db}-wal")]
    # Read by the raw scan's child process: this process holds connections to the file,
    # and closing a descriptor of its own on it would drop their locks.
    before = rawscan.scan(files, needles=[wrapped])
    assert sum(hits.count for hits in before.values()) >= 1, "the key was on disk"
    container.vault.keys.destroy_profile_key(household_id=home.household_id, profile_id=child)
    for path, hits in rawscan.scan(files, needles=[wrapped]).items():
        assert hits.count == 0, f"destroyed key still in {path.name}"


def _open_key_file(path: str) -> str:
    source = FileKeySource(Path(path))
    return source.current_id()


def test_processes_starting_together_agree_on_one_master_key(tmp_path: Path) -> None:
    """Several API processes on a fresh home: one key is made, and every process uses it."""
    import multiprocessing

    path = str(tmp_path / "master.key")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(6) as pool:
        ids = pool.map(_open_key_file, [path] * 12)
    assert len(set(ids)) == 1
    assert FileKeySource(Path(path)).key_ids() == ids[:1]
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600


def test_callers_asking_for_a_new_service_key_at_once_all_get_the_same_key(
    container: Container,
) -> None:
    """The first concurrent erasures of a fresh install made the tombstone key twice; the
    loser's IntegrityError answered 500. Now one insert wins and the rest read it."""
    import threading

    stores, now = container.stores, container.clock.now()
    # Separate key stores (each its own cache), as separate processes would be.
    stores_keys = [KeyStore(stores.key_sessions, container.vault.keys.source) for _ in range(6)]
    barrier = threading.Barrier(len(stores_keys))
    got: list[bytes] = []
    errors: list[BaseException] = []

    def ask(keys: KeyStore) -> None:
        barrier.wait()
        try:
            got.append(keys.service_key("fresh-race", now=now))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(k,)) for k in stores_keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(got) == len(stores_keys) and len(set(got)) == 1
    with stores.key_sessions() as s:
        assert len(s.scalars(select(ServiceKey).where(ServiceKey.name == "fresh-race")).all()) == 1
