"""Failed erasures are loud and recoverable (A8, C6, C10, S7, S8): a failed request stays
open, is warned about at its deadline, tells the privacy team, and runs again from where
it failed (an operator's retry, or a new request for the same subject) to a valid receipt.

Failures come from real faults: a blob store refusing deletes, a blob copy that keeps
coming back for the remnant check to find.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from sqlalchemy import select

from tests.factories import make_home, seed_media
from tests.faults import ComingBack, refuse_deletes, run_until_failed, status
from tests.integration.test_erasure_downstream import (
    Consumer,
    _register,
    consumer,  # noqa: F401
)
from tutela.audit.models import AuditEvent
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.core.errors import Conflict, KeyUnavailable, NotFound
from tutela.erasure import receipts
from tutela.erasure.jobs import MAX_STEP_ATTEMPTS, MAX_VERIFY_FAILURES
from tutela.erasure.models import DownstreamDelivery, ErasureRequest, RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.households.models import Household
from tutela.notices.models import OutboxMessage
from tutela.notices.service import NoticeKind
from tutela.vault.models import MediaItem

GUARDIAN = Requester(RequesterKind.GUARDIAN, "account:test")
OFFICER = Requester(RequesterKind.PRIVACY_OFFICER, "staff:first")


def _verified(container: Container, row: ErasureRequest) -> dict[str, object]:
    assert row.status == "completed", row.findings
    public = receipts.signing_key(container.vault.keys, now=container.clock.now()).public_key()
    return receipts.verify(json.loads(row.receipt or "{}"), public)


def _events(container: Container, request_id: uuid.UUID, tag: str) -> list[AuditEvent]:
    with container.stores.session() as s:
        return list(
            s.scalars(
                select(AuditEvent).where(
                    AuditEvent.tag == tag, AuditEvent.subject == f"erasure:{request_id}"
                )
            )
        )


def _team_notices(container: Container, kind: NoticeKind) -> int:
    with container.stores.session() as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.kind == kind.value)).all()
    assert all(r.account_id is None and r.staff_id is None for r in rows)
    return len(rows)


def _mail(container: Container, subject: str) -> list[EmailMessage]:
    folder = container.settings.mail_path
    parser = BytesParser(policy=policy.default)
    found = []
    for path in sorted(folder.glob("*.eml")) if folder.is_dir() else []:
        message = parser.parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        if message["Subject"] == subject:
            found.append(message)
    return found


def _blob_key(container: Container, household_id: uuid.UUID, item_id: uuid.UUID) -> str:
    with container.stores.session() as s:
        item = s.get(MediaItem, (household_id, item_id))
        assert item is not None and item.blob_key is not None
        return item.blob_key


def _readable(container: Container, household_id: uuid.UUID, item_id: uuid.UUID) -> bool:
    try:
        container.vault.keys.item_key(household_id=household_id, item_id=item_id)
    except KeyUnavailable:
        return False
    return True


def test_deletes_that_keep_failing_fail_the_request_loudly_and_a_retry_completes_it(
    container: Container, clock: FakeClock
) -> None:
    home = make_home(container, tag="faildel")
    made = seed_media(container, home, clips=0)
    voice = made["voice"][0]
    blob_key = _blob_key(container, home.household_id, voice)
    row = container.erasure.request(
        Scope(ScopeKind.ITEM, home.household_id, item_id=voice), GUARDIAN
    )
    blobs = refuse_deletes(container)

    passes = run_until_failed(container, clock, row.id)
    assert passes == MAX_STEP_ATTEMPTS  # twenty tries of the step, 30 s apart
    failed = status(container, row.id)
    assert (failed.status, failed.step, failed.last_error) == ("failed", "blobs", "PermissionError")
    assert failed.receipt is None and failed.completed_at is None
    assert not _readable(container, home.household_id, voice)  # the keys went first
    assert len(_events(container, row.id, "erasure:request:fail")) == 1
    assert _team_notices(container, NoticeKind.ERASURE_FAILED) == 1

    # Failed is not done: no worker picks it up by itself, and its deadline still runs.
    refused = blobs.refused
    assert container.erasure.run_pending().completed == 0
    assert blobs.refused == refused
    clock.set(failed.warn_at)
    assert container.erasure.check_deadlines() == 1
    assert status(container, row.id).warned_at == clock.now()
    assert _team_notices(container, NoticeKind.ERASURE_DEADLINE) == 1

    # The team's mail holds a count and a time: no id of the request or of its subject.
    assert container.deliver_notices() == 2
    (told,) = _mail(container, "An erasure request failed")
    text = str(told.get_content())
    assert "1 erasure request(s) failed" in text
    assert "tutela erasure retry ID" in text
    for secret in (row.id, home.household_id, voice, home.child_profiles[0]):
        assert str(secret) not in text and secret.hex not in text

    # The store is fixed; an officer runs it again from the step that failed.
    blobs.broken = False
    retried = container.erasure.retry(row.id, by="staff:pia")
    assert (retried.status, retried.step, retried.attempts) == ("pending", "blobs", 0)
    assert retried.complete_by == failed.complete_by  # the legal clock started at the request
    (event,) = _events(container, row.id, "erasure:request:retry")
    assert event.actor == "staff:pia"
    assert container.erasure.run_pending().completed == 1
    done = status(container, row.id)
    body = _verified(container, done)
    assert body["counts"] == {"voice": 1, "transcript": 1}
    assert body["complete_by"] == failed.complete_by.isoformat()
    assert done.last_error is None
    assert not container.vault.blobs.exists(blob_key)


def test_a_copy_the_remnant_check_keeps_finding_fails_the_request_and_a_retry_runs_from_keys(
    container: Container, clock: FakeClock
) -> None:
    home = make_home(container, tag="failcheck")
    voice = seed_media(container, home, clips=0)["voice"][0]
    blob_key = _blob_key(container, home.household_id, voice)
    replica = ComingBack(container, blob_key)
    container.erasure.after_step = replica
    row = container.erasure.request(
        Scope(ScopeKind.ITEM, home.household_id, item_id=voice), GUARDIAN
    )

    assert run_until_failed(container, clock, row.id) == MAX_VERIFY_FAILURES
    failed = status(container, row.id)
    assert (failed.status, failed.step, failed.last_error) == ("failed", "verify", "remnants_found")
    assert "blob store" in (failed.findings or "")
    assert _team_notices(container, NoticeKind.ERASURE_FAILED) == 1

    replica.stopped = True
    retried = container.erasure.retry(row.id, by="operator:cli")
    # What the check found goes keys first, as on the first run.
    assert (retried.step, retried.verify_failures, retried.findings) == ("keys", 0, None)
    assert container.erasure.run_pending().completed == 1
    check = _verified(container, status(container, row.id))["remnant_check"]
    assert isinstance(check, dict) and check["result"] == "clean"
    assert not container.vault.blobs.exists(blob_key)


def test_a_household_whose_closure_failed_is_requested_again_and_completes(
    container: Container, clock: FakeClock
) -> None:
    """Its rows are gone by the time the remnant check fails: a new request for the same
    household is not `household_not_found` but runs the first request again."""
    home = make_home(container, tag="failclose")
    seed_media(container, home)
    blob_key = next(iter(container.vault.blobs.keys(f"{home.household_id}/")))
    replica = ComingBack(container, blob_key)
    container.erasure.after_step = replica
    scope = Scope(ScopeKind.HOUSEHOLD, home.household_id)
    first = container.erasure.request(scope, OFFICER)

    run_until_failed(container, clock, first.id)
    assert status(container, first.id).last_error == "remnants_found"
    with container.stores.session() as s:
        assert s.get(Household, home.household_id) is None

    replica.stopped = True
    clock.advance(timedelta(days=2))
    again = container.erasure.request(scope, Requester(RequesterKind.PRIVACY_OFFICER, "staff:2"))
    assert again.id == first.id
    assert (again.status, again.step) == ("pending", "keys")
    assert (again.requested_at, again.complete_by) == (first.requested_at, first.complete_by)
    (event,) = _events(container, first.id, "erasure:request:retry")
    assert event.actor == "staff:2"
    assert container.erasure.run_pending().completed == 1
    body = _verified(container, status(container, first.id))
    assert body["scope"]["kind"] == "household"  # type: ignore[index]
    assert not any(container.vault.blobs.keys(f"{home.household_id}/"))


def test_a_failed_items_request_asked_for_again_runs_again_beside_the_new_one(
    container: Container, clock: FakeClock
) -> None:
    """ "All voice" names a later end each time: the failed request (same scope as asked)
    runs again and a new one covers what was recorded since."""
    home = make_home(container, tag="failitems")
    child = home.child_profiles[0]
    made = seed_media(container, home, clips=0)
    scope = Scope(ScopeKind.ITEMS, home.household_id, profile_id=child, kinds=("voice",))
    first = container.erasure.request(scope, GUARDIAN)
    blobs = refuse_deletes(container)
    run_until_failed(container, clock, first.id)

    blobs.broken = False
    second = container.erasure.request(scope, GUARDIAN)
    assert second.id != first.id
    assert status(container, first.id).status == "pending"
    assert container.erasure.run_pending().completed == 2
    assert _verified(container, status(container, first.id))["counts"] == {
        "voice": 2,
        "transcript": 2,
    }
    _verified(container, status(container, second.id))
    assert not any(_readable(container, home.household_id, v) for v in made["voice"])
    assert _readable(container, home.household_id, made["location"][0])


def test_a_blocked_request_is_retried_with_its_dead_letters(
    container: Container,
    clock: FakeClock,
    consumer: Consumer,  # noqa: F811
) -> None:
    _register(container, consumer)
    consumer.status = 500
    home = make_home(container, tag="failblock")
    voice = seed_media(container, home, clips=0)["voice"][0]
    row = container.erasure.request(
        Scope(ScopeKind.ITEM, home.household_id, item_id=voice), GUARDIAN
    )
    while status(container, row.id).status != "blocked":
        container.erasure.run_pending()
        with container.stores.session() as s:
            delivery = s.scalars(
                select(DownstreamDelivery).where(DownstreamDelivery.request_id == row.id)
            ).one()
        clock.set(max(clock.now(), delivery.next_attempt_at))

    consumer.status = 204
    retried = container.erasure.retry(row.id, by="staff:pia")
    assert (retried.status, retried.step) == ("pending", "downstream")
    assert container.erasure.run_pending().completed == 1
    _verified(container, status(container, row.id))


def test_only_a_failed_or_blocked_request_is_retried(container: Container) -> None:
    home = make_home(container, tag="failrefuse")
    made = seed_media(container, home, clips=0)
    done = container.erasure.request(
        Scope(ScopeKind.ITEM, home.household_id, item_id=made["voice"][0]), GUARDIAN
    )
    waiting = container.erasure.request(
        Scope(ScopeKind.ITEM, home.household_id, item_id=made["voice"][1]), GUARDIAN
    )
    container.erasure.run_request(done.id)
    assert status(container, done.id).status == "completed"

    with pytest.raises(Conflict) as completed:
        container.erasure.retry(done.id, by="staff:pia")
    assert completed.value.code == "erasure_not_retryable"
    with pytest.raises(Conflict) as pending:
        container.erasure.retry(waiting.id, by="staff:pia")
    assert pending.value.code == "erasure_not_retryable"
    with pytest.raises(NotFound) as unknown:
        container.erasure.retry(uuid.uuid4(), by="staff:pia")
    assert unknown.value.code == "erasure_not_found"
    assert status(container, waiting.id).status == "pending"
    assert _events(container, done.id, "erasure:request:retry") == []
