"""Notices in an erasure, on SQLite and PostgreSQL: the erased subject's notices and their
mailed copies go with it, a restored notice of an erased child is never sent, and every
adult of the home is told, before the keys go for a closure, without the erased child's
name (A5, A8, C1, C6, C10, S6, S7, S8).

The mail server is seen from its side through a recording `Mailer` (Tutela keeps no
copy of what it sent, as with SMTP); the `.eml` folder through the real `FileMailer`.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import _empty
from tests.factories import grant_parental_consent, make_home, password_hash, seed_media
from tests.integration.test_erasure_restore import restore_backup, take_backup
from tests.integration.test_notices import RecordingMailer, RefusingMailer
from tutela.audit.models import AuditEvent
from tutela.audit.service import AuditTag
from tutela.container import Container, build
from tutela.core.clock import FakeClock
from tutela.core.errors import KeyUnavailable
from tutela.db.base import Base, KeyBase
from tutela.erasure import receipts
from tutela.erasure.models import ErasureRequest, RequesterKind, ScopeKind, Step
from tutela.erasure.restore import restore_check
from tutela.erasure.scope import Requester, Scope
from tutela.households import service as households
from tutela.households.models import AccountRole
from tutela.households.service import AdultSpec, ChildSpec, CreatedHome, DeviceSpec, HomeSpec
from tutela.identity.owners import Owner
from tutela.notices.erased import ERASED
from tutela.notices.mail import FileMailer
from tutela.notices.models import OutboxMessage
from tutela.notices.service import MAX_ATTEMPTS, NoticeKind, enqueue
from tutela.retention.sweep import run_sweep
from tutela.settings import Settings

CHILD = "Lily Marchetti"
IDLE = timedelta(days=548)  # the packaged policy's inactive-child rule: 18 months


def two_guardians(container: Container, tag: str, *, parental_consent: bool = True) -> CreatedHome:
    """Ana (the owner) and Bruno, both guardians of Lily; a voice device and a camera;
    Ana's verified consent for Lily unless `parental_consent` is False (C3)."""
    ana, bruno = f"ana.{tag}@example.com", f"bruno.{tag}@example.com"
    spec = HomeSpec(
        adults=(
            AdultSpec("Ana Marchetti", ana, password_hash(container), AccountRole.OWNER),
            AdultSpec("Bruno Marchetti", bruno, password_hash(container)),
        ),
        children=(ChildSpec(CHILD, date(2019, 3, 14), (ana, bruno)),),
        devices=(
            DeviceSpec("voice", "Kitchen speaker"),
            DeviceSpec("camera", "Nursery camera", "nursery"),
            DeviceSpec("phone", "Family phone"),
        ),
    )
    with container.stores.session() as session:
        home = households.create_home(
            session, container.vault.keys, spec=spec, now=container.clock.now()
        )
    if parental_consent:
        grant_parental_consent(container, home)
    return home


def adult(home: CreatedHome, name: str) -> tuple[str, uuid.UUID]:
    """(email, account id) of the adult whose email starts with `name`."""
    return next((e, a) for e, a in home.accounts.items() if e.startswith(name + "."))


def as_account(kind: RequesterKind, account_id: uuid.UUID) -> Requester:
    return Requester(kind, f"account:{account_id}")


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return f"{message['Subject']}\n{body.get_content()}"


def eml_texts(folder: Path) -> list[str]:
    """What each file of the mail folder says, decoded as a reader sees it."""
    parser = BytesParser(policy=policy.default)
    texts = []
    for path in sorted(folder.glob("*.eml")):
        message = parser.parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        texts.append(f"To: {message['To']}\n{text_of(message)}")
    return texts


def finish(container: Container, row: ErasureRequest) -> ErasureRequest:
    container.erasure.run_pending()
    with container.stores.session() as s:
        done = s.get(ErasureRequest, row.id)
        assert done is not None
        return done


def receipt_of(container: Container, row: ErasureRequest) -> dict[str, object]:
    public = receipts.signing_key(container.vault.keys, now=container.clock.now()).public_key()
    return receipts.verify(json.loads(row.receipt or "{}"), public)


def outbox(container: Container, household_id: uuid.UUID) -> list[OutboxMessage]:
    with container.stores.session() as s:
        return list(
            s.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.household_id == household_id)
                .order_by(OutboxMessage.id)
            )
        )


def told_of_inactivity(container: Container, clock: FakeClock) -> None:
    """18 months idle: the sweep queues the inactive-child notice naming the child (A2)."""
    clock.advance(IDLE + timedelta(days=1))
    assert run_sweep(container).inactive_notified >= 1


# --- copies in the mail folder and the outbox (A5, A8, C1) ------------------------------


def test_an_erased_childs_mailed_notices_are_gone_and_the_check_is_clean(
    container: Container, clock: FakeClock, unique: str
) -> None:
    home = two_guardians(container, unique)
    hh, child = home.household_id, home.child_profiles[0]
    ana_email, ana = adult(home, "ana")
    folder = container.settings.mail_path
    told_of_inactivity(container, clock)
    assert container.deliver_notices() == 2  # each guardian is told the child's name
    assert sum(CHILD in t for t in eml_texts(folder)) == 2
    with container.stores.session() as s:
        about = s.scalars(select(OutboxMessage.about_profile_id)).all()
    assert about == [child, child]

    row = container.erasure.start(
        Scope(ScopeKind.PROFILE, hh, profile_id=child), as_account(RequesterKind.GUARDIAN, ana)
    )
    done = finish(container, row)

    assert done.status == "completed", (done.step, done.findings, done.last_error)
    texts = eml_texts(folder)
    assert not [t for t in texts if CHILD in t]
    assert not [t for t in texts if str(child) in t or child.hex in t]
    assert [n.kind for n in outbox(container, hh)] == [NoticeKind.ERASURE_IN_HOME] * 2
    body = receipt_of(container, done)
    assert body["remnant_check"]["result"] == "clean"  # type: ignore[index]
    assert {"outbox", "mail folder"} <= set(body["remnant_check"]["stores"])  # type: ignore[index]
    # The guardians' own mail about the erasure stays; the one who asked reads "you".
    assert container.deliver_notices() == 2
    told = [t for t in eml_texts(folder) if "being erased" in t]
    assert len(told) == 2
    mine = next(t for t in told if ana_email in t.splitlines()[0])
    assert "Asked by: you" in mine


def test_a_mailed_copy_that_comes_back_is_found_and_discarded_again(
    container: Container, clock: FakeClock, unique: str
) -> None:
    """A8: a copy in the mail folder holds the request open; the steps run again."""
    home = make_home(container, tag=unique)
    hh, child = home.household_id, home.child_profiles[0]
    folder = container.settings.mail_path
    told_of_inactivity(container, clock)
    assert container.deliver_notices() == 1
    (copy_path,) = folder.glob("*.eml")
    copy = copy_path.read_bytes()

    def put_back(_request_id: uuid.UUID, step: Step) -> None:
        if step is Step.TOMBSTONES and not copy_path.exists():
            copy_path.write_bytes(copy)

    container.erasure.after_step = put_back
    row = container.erasure.request(
        Scope(ScopeKind.PROFILE, hh, profile_id=child), Requester(RequesterKind.GUARDIAN, "x")
    )
    first = finish(container, row)
    assert first.status != "completed"
    assert first.findings is not None and "mail folder" in first.findings
    container.erasure.after_step = None
    clock.advance(timedelta(minutes=1))

    done = finish(container, row)

    assert done.status == "completed", done.findings
    assert done.verify_failures == 1
    assert not copy_path.exists()
    assert not [t for t in eml_texts(folder) if CHILD in t]


def test_a_mail_file_naming_an_erased_id_keeps_the_request_open(
    container: Container, unique: str
) -> None:
    """The folder is scanned for erased ids too, whatever wrote the file."""
    home = make_home(container, tag=unique)
    hh, child = home.household_id, home.child_profiles[0]
    folder = container.settings.mail_path
    folder.mkdir(mode=0o700, exist_ok=True)
    stray = folder / "forwarded.eml"
    stray.write_text(f"Subject: about profile {child}\n\nsee above\n")

    row = container.erasure.request(
        Scope(ScopeKind.PROFILE, hh, profile_id=child), Requester(RequesterKind.GUARDIAN, "x")
    )
    first = finish(container, row)

    assert first.status != "completed"
    findings = json.loads(first.findings or "[]")
    assert [f["count"] for f in findings if f["store"] == "mail folder"] == [1]
    stray.unlink()
    container.clock.advance(timedelta(minutes=1))
    assert finish(container, row).status == "completed"


class GatedFileMailer(FileMailer):
    """The file mailer, holding its first message until told to write it."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.entered = threading.Event()
        self.release = threading.Event()

    def send(self, message: EmailMessage, *, reference: str | None = None) -> None:
        self.entered.set()
        assert self.release.wait(timeout=10)
        super().send(message, reference=reference)


def test_a_notice_mailed_while_its_subject_is_erased_is_discarded_too(
    settings: Settings, clock: FakeClock, unique: str
) -> None:
    """A worker mailing the child's notice while `rows` runs: the row's deletion waits for
    the worker to finish, so the copy it wrote is discarded in the same step."""
    gated = GatedFileMailer(settings.mail_path)
    with recorded(settings, clock, gated) as (container, _):
        home = make_home(container, tag=unique)
        hh, child = home.household_id, home.child_profiles[0]
        told_of_inactivity(container, clock)
        row = container.erasure.request(
            Scope(ScopeKind.PROFILE, hh, profile_id=child),
            Requester(RequesterKind.GUARDIAN, "x"),
        )
        container.erasure.run_request(row.id, until=Step.DERIVED)
        worker = threading.Thread(target=container.deliver_notices)
        worker.start()
        assert gated.entered.wait(timeout=10)  # the notice naming the child is claimed
        threading.Timer(0.3, gated.release.set).start()

        done = finish(container, row)
        worker.join(timeout=20)

        assert done.status == "completed", done.findings
        assert done.verify_failures == 0
        assert not [t for t in eml_texts(settings.mail_path) if CHILD in t]


def test_a_closed_household_leaves_no_notice_and_no_mail_file(
    container: Container, clock: FakeClock, unique: str
) -> None:
    home = two_guardians(container, unique)
    hh = home.household_id
    ana_email, ana = adult(home, "ana")
    bruno_email, _ = adult(home, "bruno")
    told_of_inactivity(container, clock)
    assert container.deliver_notices() == 2
    other = make_home(container, tag=unique + "o", child_name="Otto Lindqvist")
    with container.stores.session() as s:
        other_email, other_account = next(iter(other.accounts.items()))
        enqueue(
            s,
            container.vault.keys,
            kind=NoticeKind.PASSWORD_CHANGED,
            owner=Owner.account(
                other.household_id, other_account, other.adult_profiles[other_email]
            ),
            params={"at": clock.now().isoformat()},
            now=clock.now(),
        )
        s.commit()
    assert container.deliver_notices() == 1

    row = container.erasure.start(
        Scope(ScopeKind.HOUSEHOLD, hh), as_account(RequesterKind.ACCOUNT_CLOSURE, ana)
    )
    done = finish(container, row)

    assert done.status == "completed", (done.step, done.findings)
    assert outbox(container, hh) == []
    texts = eml_texts(container.settings.mail_path)
    assert not [t for t in texts if ana_email in t or bruno_email in t or CHILD in t]
    assert [t for t in texts if other_email in t]  # another home's mail is not touched
    assert "mail folder" in receipt_of(container, done)["remnant_check"]["stores"]  # type: ignore[index]


# --- restored backups (S8) ---------------------------------------------------------------


def test_a_restored_notice_of_an_erased_child_is_never_sent(
    container: Container, clock: FakeClock, backend: str, tmp_path: Path, unique: str
) -> None:
    """The backup holds the unsent inactive-child notice; after the child's erasure and
    the restore, restore-check purges it before any worker can mail it."""
    home = make_home(container, tag=unique)
    hh, child = home.household_id, home.child_profiles[0]
    _, ana = adult(home, "ana")
    told_of_inactivity(container, clock)  # queued, not sent
    backup = take_backup(container, backend, tmp_path / "backup")
    row = container.erasure.start(
        Scope(ScopeKind.PROFILE, hh, profile_id=child), as_account(RequesterKind.GUARDIAN, ana)
    )
    assert finish(container, row).status == "completed"
    sent_before = container.deliver_notices()  # the erasure notice to the guardian
    restore_backup(container, backend, backup)
    assert [n.kind for n in outbox(container, hh)] == [NoticeKind.INACTIVE_CHILD]

    dry = restore_check(container, dry_run=True)
    assert (dry.profiles, dry.notices) == (1, 1)
    assert len(outbox(container, hh)) == 1
    report = restore_check(container)

    assert (report.profiles, report.notices) == (1, 1)
    assert outbox(container, hh) == []
    assert container.deliver_notices() == 0
    assert container.erasure.run_pending().completed == 1
    assert container.deliver_notices() == 0
    assert sent_before == 1
    assert not [t for t in eml_texts(container.settings.mail_path) if CHILD in t]
    assert restore_check(container).found == 0


def test_the_worker_refuses_a_restored_notice_of_an_erased_child(
    settings: Settings, clock: FakeClock, backend: str, tmp_path: Path, unique: str
) -> None:
    """Before anyone runs restore-check: delivery looks the subject up in the tombstones,
    and gives the notice up unsent, its parameters wiped."""
    with recorded(settings, clock) as (container, mail):
        home = make_home(container, tag=unique)
        hh, child = home.household_id, home.child_profiles[0]
        told_of_inactivity(container, clock)
        backup = take_backup(container, backend, tmp_path / "backup")
        row = container.erasure.request(
            Scope(ScopeKind.PROFILE, hh, profile_id=child),
            Requester(RequesterKind.PRIVACY_OFFICER, "staff:test"),
        )
        assert finish(container, row).status == "completed"
        restore_backup(container, backend, backup)

        assert container.deliver_notices() == 0

        assert not [m for m in mail.sent if CHILD in text_of(m)]
        (restored,) = outbox(container, hh)
        assert (restored.kind, restored.sent_at, restored.last_error) == (
            NoticeKind.INACTIVE_CHILD,
            None,
            ERASED,
        )
        assert restored.attempts == MAX_ATTEMPTS and restored.params_sealed == b""


# --- every adult is told (C6, C10, S7) -------------------------------------------------


class KeysAtSend(RecordingMailer):
    """The mail server's side, noting for each message whether the household's keys
    still existed when it was handed over."""

    def __init__(self) -> None:
        super().__init__()
        self.container: Container | None = None
        self.household_id: uuid.UUID | None = None
        self.keys_left: list[int] = []

    def send(self, message: EmailMessage, *, reference: str | None = None) -> None:
        if self.container is not None and self.household_id is not None:
            self.keys_left.append(
                self.container.vault.keys.remaining_keys(household_id=self.household_id)
            )
        super().send(message, reference=reference)


@contextmanager
def recorded(
    settings: Settings, clock: FakeClock, mail: RecordingMailer | None = None
) -> Iterator[tuple[Container, KeysAtSend]]:
    """A container whose mailer is a recording one; emptied like the `container` fixture."""
    mailer = mail or KeysAtSend()
    container = build(settings, clock=clock, mailer=mailer)
    if isinstance(mailer, KeysAtSend):
        mailer.container = container
    try:
        yield container, mailer  # type: ignore[misc]
    finally:
        _empty(container.stores.main, Base.metadata)
        _empty(container.stores.keys, KeyBase.metadata)
        container.close()


def to(mail: Iterable[EmailMessage], email: str) -> list[str]:
    return [text_of(m) for m in mail if m["To"] == email]


def test_every_adult_is_told_of_a_childs_profile_erasure_without_the_childs_name(
    settings: Settings, clock: FakeClock, unique: str
) -> None:
    with recorded(settings, clock) as (container, mail):
        home = make_home(container, tag=unique, second_adult=True)  # Bruno: not a guardian
        hh, child = home.household_id, home.child_profiles[0]
        mail.household_id = hh
        ana_email, ana = adult(home, "ana")
        bruno_email, _ = adult(home, "bruno")
        seed_media(container, home, voices=1, clips=0)

        row = container.erasure.start(
            Scope(ScopeKind.PROFILE, hh, profile_id=child),
            as_account(RequesterKind.GUARDIAN, ana),
        )
        assert container.deliver_notices() == 2
        assert finish(container, row).status == "completed"

        (to_ana,) = to(mail.sent, ana_email)
        (to_bruno,) = to(mail.sent, bruno_email)
        for text in (to_ana, to_bruno):
            assert CHILD not in text and "Lily" not in text
            assert str(child) not in text
            assert "a child's profile, with everything recorded of the child" in text
            assert f"{container.settings.origin}/api/v1/receipts/{row.id}" in text
            assert f"{container.settings.origin}/account/privacy" in text
            assert "When:" in text
        assert "Asked by: you" in to_ana
        assert "Asked by: Ana Marchetti" in to_bruno
        assert mail.references == sorted(mail.references)  # one per outbox row, its id


def test_a_closure_tells_every_adult_before_the_keys_go(
    settings: Settings, clock: FakeClock, unique: str
) -> None:
    with recorded(settings, clock) as (container, mail):
        home = two_guardians(container, unique)
        hh = home.household_id
        mail.household_id = hh
        ana_email, ana = adult(home, "ana")
        bruno_email, _ = adult(home, "bruno")
        made = seed_media(container, home, voices=1, clips=0)

        row = container.erasure.start(
            Scope(ScopeKind.HOUSEHOLD, hh), as_account(RequesterKind.ACCOUNT_CLOSURE, ana)
        )

        # Both were handed to the mail server inside `mark`, while every key still existed.
        assert sorted(m["To"] for m in mail.sent) == sorted([ana_email, bruno_email])
        assert all(left > 0 for left in mail.keys_left)
        # Answered once the household's profile keys were gone: no item key unwraps.
        for item_id in (i for ids in made.values() for i in ids):
            with pytest.raises(KeyUnavailable):
                container.vault.keys.item_key(household_id=hh, item_id=item_id)
        (to_bruno,) = to(mail.sent, bruno_email)
        assert "Asked by: Ana Marchetti" in to_bruno
        assert "your household's account" in to_bruno
        assert CHILD not in to_bruno and "Lily" not in to_bruno
        done = finish(container, row)
        assert done.status == "completed", (done.step, done.findings)
        assert outbox(container, hh) == []
        assert len(mail.sent) == 2  # nothing more once the accounts are gone


def test_a_closure_goes_on_when_the_mail_server_is_down(
    settings: Settings, clock: FakeClock, unique: str
) -> None:
    """The closure never waits on mail: the failure is recorded, the erasure completes."""
    down = RefusingMailer()
    with recorded(settings, clock, down) as (container, _):
        home = two_guardians(container, unique)
        _, ana = adult(home, "ana")

        row = container.erasure.start(
            Scope(ScopeKind.HOUSEHOLD, home.household_id),
            as_account(RequesterKind.ACCOUNT_CLOSURE, ana),
        )
        done = finish(container, row)

        assert down.calls == 2
        assert done.status == "completed", (done.step, done.findings)
        with container.stores.session() as s:
            undelivered = s.scalars(
                select(AuditEvent.subject).where(
                    AuditEvent.tag == AuditTag.ERASURE_NOTICE_UNDELIVERED
                )
            ).all()
        assert undelivered == [f"erasure:{row.id}"]
        assert outbox(container, home.household_id) == []


def test_an_officers_erasure_tells_every_adult(
    settings: Settings, clock: FakeClock, unique: str
) -> None:
    with recorded(settings, clock) as (container, mail):
        home = make_home(container, tag=unique, second_adult=True)
        hh, child = home.household_id, home.child_profiles[0]
        seed_media(container, home, voices=1, clips=0)

        row = container.erasure.request(
            Scope(ScopeKind.ITEMS, hh, profile_id=child, kinds=("voice",)),
            Requester(RequesterKind.PRIVACY_OFFICER, "staff:" + str(uuid.uuid4())),
        )
        assert container.deliver_notices() == 2
        assert finish(container, row).status == "completed"

        assert sorted(m["To"] for m in mail.sent) == sorted(home.accounts)
        for message in mail.sent:
            text = text_of(message)
            assert "Asked by: Tutela's privacy office" in text
            assert "some of the recordings and location records of one profile" in text
            assert CHILD not in text


def test_an_adults_erasure_of_their_own_items_tells_nobody(
    settings: Settings, clock: FakeClock, unique: str
) -> None:
    with recorded(settings, clock) as (container, mail):
        home = make_home(container, tag=unique, second_adult=True)
        ana_email, ana = adult(home, "ana")
        seed_media(container, home, profile=home.adult_profiles[ana_email], voices=1, clips=0)

        row = container.erasure.start(
            Scope(
                ScopeKind.ITEMS,
                home.household_id,
                profile_id=home.adult_profiles[ana_email],
                kinds=("voice",),
            ),
            as_account(RequesterKind.ADULT, ana),
        )
        assert finish(container, row).status == "completed"

        assert container.deliver_notices() == 0
        assert mail.sent == []
        with container.stores.session() as s:
            assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_a_restore_check_erasure_tells_nobody_again(
    container: Container, backend: str, tmp_path: Path, unique: str
) -> None:
    home = make_home(container, tag=unique, second_adult=True)
    hh, child = home.household_id, home.child_profiles[0]
    backup = take_backup(container, backend, tmp_path / "backup")
    row = container.erasure.request(
        Scope(ScopeKind.PROFILE, hh, profile_id=child),
        Requester(RequesterKind.GUARDIAN, f"account:{adult(home, 'ana')[1]}"),
    )
    assert finish(container, row).status == "completed"
    restore_backup(container, backend, backup)

    report = restore_check(container)

    assert len(report.requests) == 1
    assert outbox(container, hh) == []
