"""Batch jobs and unreadable-first erasure at scale (A5, A6, A8, C9, S6).

A batch erases items named one by one across profiles and households as one job: one
mark, one key deletion, one statement per table, one remnant check (one raw scan on the
embedded store) and one receipt that counts each subject under a salted digest. A
customer's own request beside it keeps its own receipt. A profile's erasure is
unreadable before its request is answered however many items it has.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from tests.factories import make_home, seed_media
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.core.errors import KeyUnavailable
from tutela.erasure import rawscan, receipts
from tutela.erasure.models import ErasureRequest, RequesterKind, ScopeKind, Step
from tutela.erasure.scope import Member, Requester, Scope
from tutela.vault.models import ItemState, MediaItem

SWEEP = Requester(RequesterKind.RETENTION, "rule:retention")
GUARDIAN = Requester(RequesterKind.GUARDIAN, "account:test")


def _drain(container: Container, clock: FakeClock, rounds: int = 20) -> None:
    for _ in range(rounds):
        report = container.erasure.run_pending(limit=50)
        if not (report.completed or report.advanced or report.waiting):
            return
        clock.advance(timedelta(seconds=5))


def _row(container: Container, request_id: uuid.UUID) -> ErasureRequest:
    with container.stores.session() as s:
        row = s.get(ErasureRequest, request_id)
        assert row is not None
        return row


def _receipt(container: Container, row: ErasureRequest) -> dict[str, Any]:
    public = receipts.signing_key(container.vault.keys, now=container.clock.now()).public_key()
    return receipts.verify(json.loads(row.receipt or "{}"), public)


def _members(container: Container, household_id: uuid.UUID, ids: list[uuid.UUID]) -> list[Member]:
    with container.stores.session() as s:
        rows = s.execute(
            select(MediaItem.id, MediaItem.profile_id).where(
                MediaItem.household_id == household_id, MediaItem.id.in_(ids)
            )
        ).all()
    return [Member(household_id, r.profile_id, r.id) for r in rows]


def test_a_batch_across_three_households_has_one_receipt_and_each_customer_their_own(
    container: Container, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    homes = [make_home(container, tag=f"batch{n}") for n in range(3)]
    made = [seed_media(container, home, voices=2, clips=1) for home in homes]
    # The batch: every voice recording of each home (their transcripts go with them),
    # and the first home's clip.
    members = []
    for home, items in zip(homes, made, strict=True):
        members += _members(container, home.household_id, items["voice"])
    members += _members(container, homes[0].household_id, made[0]["video"])
    # A customer of the second home erases their child's location history meanwhile.
    own = container.erasure.request(
        Scope(
            ScopeKind.ITEMS,
            homes[1].household_id,
            profile_id=homes[1].child_profiles[0],
            kinds=("location",),
        ),
        GUARDIAN,
    )
    _drain(container, clock)
    scans: list[int] = []
    scan = rawscan.scan_sets

    def counted(*args: Any, **kwargs: Any) -> Any:
        scans.append(1)
        return scan(*args, **kwargs)

    monkeypatch.setattr(rawscan, "scan_sets", counted)

    outcome = container.erasure.request_batch(members, SWEEP, hold=container.hold)
    assert len(outcome.requests) == 1 and outcome.held == 0
    _drain(container, clock)

    batch = _row(container, outcome.requests[0])
    assert (batch.status, batch.scope_kind, batch.household_id) == ("completed", "batch", None)
    body = _receipt(container, batch)
    assert body["scope"]["kind"] == "batch"
    assert body["remnant_check"]["result"] == "clean"
    # Six recordings with their six transcripts, and one clip with its thumbnail.
    assert body["counts"] == {"voice": 6, "transcript": 6, "video": 1, "thumbnail": 1}
    # Each subject's line, under sha256(salt || its profile id): found by who knows the id.
    salt = base64.b64decode(body["scope"]["subject_salt"])
    child = [h.child_profiles[0] for h in homes]
    assert set(body["subjects"]) == {
        hashlib.sha256(salt + str(p).encode()).hexdigest() for p in child
    }
    first = hashlib.sha256(salt + str(child[0]).encode()).hexdigest()
    assert body["subjects"][first] == {"thumbnail": 1, "transcript": 2, "video": 1, "voice": 2}
    for p in child[1:]:
        line = body["subjects"][hashlib.sha256(salt + str(p).encode()).hexdigest()]
        assert line == {"transcript": 2, "voice": 2}

    erased = {m.item_id for m in members}
    erased |= {t for items in made for t in items["transcript"]}
    erased |= set(made[0]["thumbnail"])
    keys = container.vault.keys
    for home, items in zip(homes, made, strict=True):
        for kind, ids in items.items():
            for item_id in ids:
                if item_id in erased:
                    with pytest.raises(KeyUnavailable):
                        keys.item_key(household_id=home.household_id, item_id=item_id)
                elif kind != "location" or home is not homes[1]:
                    assert keys.item_key(household_id=home.household_id, item_id=item_id)
    with container.stores.session() as s:
        left = set(s.scalars(select(MediaItem.id)))
    assert not (left & erased)
    assert set(made[1]["video"]) <= left and set(made[2]["thumbnail"]) <= left

    # The customer's own request: its own receipt, its own counts.
    theirs = _row(container, own.id)
    assert theirs.status == "completed"
    assert _receipt(container, theirs)["counts"] == {"location": len(made[1]["location"])}
    if container.stores.main.dialect.name == "sqlite":
        # One raw scan for the batch's three households and six kinds (a second only
        # after a rewrite of free space): never one per subject.
        assert 1 <= len(scans) <= 2


def test_batches_are_at_most_the_batch_size_and_holds_are_left_out(
    container: Container, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    homes = [make_home(container, tag=f"size{n}") for n in range(2)]
    made = [seed_media(container, home, voices=3, clips=0) for home in homes]
    members = [
        m
        for home, items in zip(homes, made, strict=True)
        for m in _members(container, home.household_id, items["voice"])
    ]
    monkeypatch.setattr(container.settings, "erasure_batch_size", 2)
    held_home = homes[1].household_id

    def hold(household_id: uuid.UUID, profile_id: uuid.UUID | None, now: Any) -> object | None:
        return "litigation" if household_id == held_home else None

    outcome = container.erasure.request_batch(members, SWEEP, hold=hold)
    assert outcome.held == 3
    assert len(outcome.requests) == 2  # 3 members of the first home, 2 a batch
    with container.stores.session() as s:
        marked = s.scalars(select(MediaItem.state).where(MediaItem.id.in_(made[0]["voice"]))).all()
    # Named items leave every listing with the request itself.
    assert set(marked) == {ItemState.UNDER_ERASURE}
    _drain(container, clock)
    for request_id in outcome.requests:
        assert _row(container, request_id).status == "completed"
    keys = container.vault.keys
    for item_id in made[1]["voice"]:
        assert keys.item_key(household_id=held_home, item_id=item_id)


def test_a_profile_of_100000_items_is_unreadable_before_the_answer(
    container: Container, clock: FakeClock
) -> None:
    """`start` (what the API runs before its 202) destroys the profile key without reading
    the items: the rows are read afterwards, by `collect` (S6)."""
    home = make_home(container, tag="big")
    child = home.child_profiles[0]
    real = seed_media(container, home, voices=2, clips=1)
    now = container.clock.now()
    rows = [
        {
            "household_id": home.household_id,
            "id": uuid.uuid4(),
            "profile_id": child,
            "kind": "location",
            "subject_class": "child",
            "media_type": "application/json",
            "captured_at": now - timedelta(seconds=n),
            "received_at": now,
            "size": 10,
            "content_mac": b"\x01" * 32,
            "sealed_size": 0,
            "state": ItemState.ACTIVE,
        }
        for n in range(100_000)
    ]
    with container.stores.session() as s:
        s.execute(insert(MediaItem), rows)
        s.commit()

    started = container.erasure.start(
        Scope(ScopeKind.PROFILE, home.household_id, profile_id=child), GUARDIAN
    )

    assert started.step == Step.COLLECT  # answered after keys, before any row was read
    keys = container.vault.keys
    with pytest.raises(KeyUnavailable):
        keys.profile_key(household_id=home.household_id, profile_id=child)
    for item_id in real["voice"] + real["video"]:
        with pytest.raises(KeyUnavailable):
            keys.item_key(household_id=home.household_id, item_id=item_id)
    _drain(container, clock)
    done = _row(container, started.id)
    assert done.status == "completed", (done.step, done.last_error, done.findings)
    counts = _receipt(container, done)["counts"]
    assert counts["location"] == 100_000 + len(real["location"])
