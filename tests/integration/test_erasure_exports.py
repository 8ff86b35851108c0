"""The remnant check knows export packages: a copy left behind keeps an erasure open (A8,
A5, C6), whether the erasure is the package's expiry or its profile's."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, update

from tests.factories import make_home, seed_media
from tutela.container import Container
from tutela.erasure.models import ErasureRequest, RequesterKind, ScopeKind, Step
from tutela.erasure.scope import Requester, Scope
from tutela.exports import service, worker
from tutela.exports.models import Export
from tutela.households.service import CreatedHome

GUARDIAN = Requester(RequesterKind.GUARDIAN, "account:test")


def ready_export(container: Container, home: CreatedHome) -> Export:
    child = home.child_profiles[0]
    with container.stores.session() as s:
        asked = service.request_export(
            s,
            household_id=home.household_id,
            account_id=next(iter(home.accounts.values())),
            profile_id=child,
            visible={child},
            now=container.clock.now(),
        )
        export_id = asked.id
    assert worker.package_pending(container) == 1
    with container.stores.session() as s:
        export = s.get(Export, (home.household_id, export_id))
        assert export is not None and export.state == "ready"
        s.expunge(export)
    return export


def request_of(container: Container, request_id: uuid.UUID) -> ErasureRequest:
    with container.stores.session() as s:
        row = s.get(ErasureRequest, request_id)
        assert row is not None
        return row


def test_an_expired_package_put_back_keeps_its_erasure_open(container: Container) -> None:
    home = make_home(container, tag="expback")
    seed_media(container, home, voices=1, clips=1)
    export = ready_export(container, home)
    assert export.blob_key is not None and export.package_id is not None
    blob = container.vault.blobs.read_at(export.blob_key, 0, export.sealed_size)

    def put_back(_request_id: uuid.UUID, step: Step) -> None:
        if step is Step.TOMBSTONES:
            container.vault.blobs.write(str(export.blob_key), [blob])
            with container.stores.session() as s:
                s.execute(
                    update(Export)
                    .where(Export.id == export.id)
                    .values(package_id=export.package_id, blob_key=export.blob_key)
                )
                s.commit()

    container.clock.advance(timedelta(days=container.settings.export_link_days))
    container.erasure.after_step = put_back
    assert worker.expire_due(container) == 1
    with container.stores.session() as s:
        request_id = s.scalar(select(Export.erasure_request_id).where(Export.id == export.id))
    assert request_id is not None
    container.erasure.run_pending()
    first = request_of(container, request_id)
    assert first.status != "completed"
    assert first.findings is not None
    assert "blob store" in first.findings and "export packages" in first.findings

    container.erasure.after_step = None
    container.clock.advance(timedelta(minutes=1))
    container.erasure.run_pending()
    done = request_of(container, request_id)
    assert done.status == "completed" and done.receipt is not None
    assert not container.vault.blobs.exists(export.blob_key)
    with container.stores.session() as s:
        row = s.get(Export, (home.household_id, export.id))
        assert row is not None and row.package_id is None and row.state == "expired"


def test_a_profile_erasure_finds_a_package_blob_left_behind(container: Container) -> None:
    home = make_home(container, tag="profback")
    seed_media(container, home, voices=1, clips=0)
    export = ready_export(container, home)
    assert export.blob_key is not None
    blob = container.vault.blobs.read_at(export.blob_key, 0, export.sealed_size)

    def put_back(_request_id: uuid.UUID, step: Step) -> None:
        if step is Step.TOMBSTONES:
            container.vault.blobs.write(str(export.blob_key), [blob])

    container.erasure.after_step = put_back
    row = container.erasure.request(
        Scope(ScopeKind.PROFILE, home.household_id, profile_id=home.child_profiles[0]),
        GUARDIAN,
    )
    container.erasure.run_pending()
    first = request_of(container, row.id)
    assert first.status != "completed"
    assert first.findings is not None and "blob store" in first.findings

    container.erasure.after_step = None
    container.clock.advance(timedelta(minutes=1))
    container.erasure.run_pending()
    assert request_of(container, row.id).status == "completed"
    assert not container.vault.blobs.exists(export.blob_key)
    with container.stores.session() as s:
        assert s.get(Export, (home.household_id, export.id)) is None


def test_a_household_closure_leaves_no_export_behind(container: Container) -> None:
    home = make_home(container, tag="closeexp")
    seed_media(container, home, voices=1, clips=0)
    export = ready_export(container, home)
    assert export.package_id is not None and export.blob_key is not None
    row = container.erasure.request(
        Scope(ScopeKind.HOUSEHOLD, home.household_id),
        Requester(RequesterKind.ACCOUNT_CLOSURE, "account:test"),
    )
    container.erasure.run_pending()
    assert request_of(container, row.id).status == "completed"
    with container.stores.session() as s:
        assert s.get(Export, (home.household_id, export.id)) is None
    assert not container.vault.blobs.exists(export.blob_key)
    assert container.vault.keys.remaining_item_keys([(home.household_id, export.package_id)]) == 0


def test_a_package_that_cannot_be_read_fails_and_leaves_nothing(container: Container) -> None:
    """An item whose ciphertext fails its integrity check fails the export: no half
    package stays, neither its key nor its blob (nothing half-written)."""
    from tutela.vault.models import MediaItem

    home = make_home(container, tag="badexp")
    made = seed_media(container, home, voices=1, clips=1)
    with container.stores.session() as s:
        clip = s.get(MediaItem, (home.household_id, made["video"][0]))
        assert clip is not None and clip.blob_key is not None
        path = container.settings.blob_path / clip.blob_key
    sealed = bytearray(path.read_bytes())
    sealed[-20] ^= 0x01  # one flipped bit in the clip's last chunk
    path.write_bytes(bytes(sealed))
    child = home.child_profiles[0]
    with container.stores.session() as s:
        asked = service.request_export(
            s,
            household_id=home.household_id,
            account_id=next(iter(home.accounts.values())),
            profile_id=child,
            visible={child},
            now=container.clock.now(),
        )
        export_id = asked.id
    claimed = worker.claim(container)
    assert claimed is not None
    assert worker.package(container, claimed) is False
    with container.stores.session() as s:
        row = s.get(Export, (home.household_id, export_id))
        assert row is not None
        assert (row.state, row.reason, row.package_id) == ("failed", "integrity_failure", None)
    assert not container.vault.blobs.exists(claimed.blob_key)
    pair = [(home.household_id, claimed.package_id)]
    assert container.vault.keys.remaining_item_keys(pair) == 0


def test_an_export_whose_workers_keep_dying_fails_and_leaves_nothing(container: Container) -> None:
    home = make_home(container, tag="dying")
    seed_media(container, home, voices=1, clips=0)
    child = home.child_profiles[0]
    with container.stores.session() as s:
        export_id = service.request_export(
            s,
            household_id=home.household_id,
            account_id=next(iter(home.accounts.values())),
            profile_id=child,
            visible={child},
            now=container.clock.now(),
        ).id
    lease = timedelta(seconds=container.settings.export_lease_seconds + 1)
    packages = []
    for _ in range(worker.MAX_ATTEMPTS):
        claimed = worker.claim(container, owner="dies")
        assert claimed is not None
        container.vault.keys.create_item_key(
            household_id=home.household_id,
            profile_id=child,
            item_id=claimed.package_id,
            now=container.clock.now(),
        )
        packages.append(claimed.package_id)
        container.clock.advance(lease)
    assert worker.claim(container) is None
    with container.stores.session() as s:
        row = s.get(Export, (home.household_id, export_id))
        assert row is not None
        assert (row.state, row.reason, row.package_id) == ("failed", "packaging_failed", None)
    pairs = [(home.household_id, p) for p in packages]
    assert container.vault.keys.remaining_item_keys(pairs) == 0
