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
