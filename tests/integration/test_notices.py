"""The notice outbox on SQLite and PostgreSQL: queued with the action, sealed, mailed once."""

from __future__ import annotations

import stat
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text

from tests.factories import make_home
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.households.models import Account
from tutela.households.service import CreatedHome
from tutela.identity.owners import Owner
from tutela.notices.mail import FileMailer, Mailer, latest_message
from tutela.notices.models import OutboxMessage
from tutela.notices.service import (
    MAX_ATTEMPTS,
    DeliveryReport,
    NoticeKind,
    deliver_pending,
    enqueue,
    pending_count,
)

ADDRESS = "203.0.113.9"
DEVICE = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0"
SHOWN_DEVICE = "Firefox on Windows"  # what the notice says of DEVICE, never the raw text
LINK = "https://tutela.example/login/link#s3cr3t-t0ken-Q9xv"


class RecordingMailer:
    """A mail server seen from its side: keeps what it is given, and, like SMTP, Tutela
    keeps no copy of it. Slow on request, to let workers overlap."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sent: list[EmailMessage] = []
        self.references: list[str | None] = []
        self.delay = delay
        self._lock = threading.Lock()

    def send(self, message: EmailMessage, *, reference: str | None = None) -> None:
        time.sleep(self.delay)
        with self._lock:
            self.sent.append(message)
            self.references.append(reference)

    def discard(self, references: Iterable[str]) -> int:
        return 0

    def held(self, references: Iterable[str]) -> set[str]:
        return set()


class RefusingMailer(RecordingMailer):
    """A mail server that is down; its error quotes the recipient, as real ones do."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def send(self, message: EmailMessage, *, reference: str | None = None) -> None:
        self.calls += 1
        raise ConnectionRefusedError(f"relay refused {message['To']}")


def _ana(home: CreatedHome, tag: str) -> tuple[Owner, str]:
    email = f"ana.{tag}@example.com"
    return Owner.account(home.household_id, home.accounts[email], home.adult_profiles[email]), email


def _queue(
    container: Container,
    owner: Owner | None,
    kind: NoticeKind = NoticeKind.NEW_DEVICE_SIGN_IN,
    params: dict[str, str] | None = None,
) -> uuid.UUID:
    with container.stores.session() as session:
        message_id = enqueue(
            session,
            container.vault.keys,
            kind=kind,
            owner=owner,
            params=params
            or {"at": "2026-11-29T05:30:00+01:00", "device": DEVICE, "address": ADDRESS},
            now=container.clock.now(),
        )
        session.commit()
    return message_id


def _deliver(
    container: Container, mailer: Mailer, *, later: timedelta = timedelta()
) -> DeliveryReport:
    return deliver_pending(
        container.stores,
        container.vault.keys,
        mailer,
        container.settings,
        now=container.clock.now() + later,
    )


def _row(container: Container, message_id: uuid.UUID) -> OutboxMessage:
    with container.stores.session() as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        return row


def _stored_bytes(container: Container) -> bytes:
    """Every outbox column of every row, as the database holds it."""
    table = OutboxMessage.__table__
    with container.stores.main.connect() as conn:
        rows = conn.execute(select(table)).all()
    return b"|".join(
        value if isinstance(value, bytes) else str(value).encode() for row in rows for value in row
    )


def test_a_new_device_sign_in_is_mailed_to_the_account_holder(
    container: Container, tmp_path: Path, unique: str
) -> None:
    """R6: the holder learns when, from what and from where, and what to do if not them."""
    home = make_home(container, tag=unique)
    owner, email = _ana(home, unique)
    _queue(container, owner)

    report = _deliver(container, FileMailer(tmp_path / "mail"))

    assert report == DeliveryReport(sent=1)
    message = latest_message(tmp_path / "mail", to=email)
    assert message is not None
    assert message["To"] == email
    assert message["From"] == container.settings.mail_from
    assert message["Subject"] == "New sign-in to your Tutela account"
    assert message["Date"] and message["Message-ID"]
    body = message.get_content()
    assert "device we have not seen before" in body
    assert "2026-11-29 04:30 UTC" in body
    assert f"  Device:  {SHOWN_DEVICE}" in body.splitlines() and ADDRESS in body
    assert DEVICE not in body
    assert f"{container.settings.origin}/account/security" in body
    assert "end all your sessions and change your password" in body


def test_a_correct_password_with_a_failed_second_factor_says_change_it(
    container: Container, tmp_path: Path, unique: str
) -> None:
    """S4 (OWASP): the password is known to someone; the notice says so and never holds it."""
    home = make_home(container, tag=unique)
    owner, email = _ana(home, unique)
    _queue(container, owner, NoticeKind.SECOND_FACTOR_FAILED)

    _deliver(container, FileMailer(tmp_path / "mail"))

    message = latest_message(tmp_path / "mail", to=email)
    assert message is not None
    body = message.get_content()
    assert "correct password" in body and "change your password" in body
    assert "correct horse battery staple" not in body


def test_parameters_are_not_stored_in_plaintext(container: Container, unique: str) -> None:
    home = make_home(container, tag=unique)
    owner, _ = _ana(home, unique)
    _queue(container, owner)
    _queue(container, owner, NoticeKind.SIGN_IN_LINK, {"at": "2026-11-29T04:30:00Z", "link": LINK})

    stored = _stored_bytes(container)

    assert ADDRESS.encode() not in stored
    assert b"Firefox" not in stored
    assert b"s3cr3t-t0ken" not in stored
    assert f"ana.{unique}".encode() not in stored


def test_nothing_is_sent_when_the_action_rolls_back(
    container: Container, tmp_path: Path, unique: str
) -> None:
    home = make_home(container, tag=unique)
    owner, _ = _ana(home, unique)
    with container.stores.session() as session:
        enqueue(
            session,
            container.vault.keys,
            kind=NoticeKind.PASSWORD_CHANGED,
            owner=owner,
            params={"at": container.clock.now().isoformat()},
            now=container.clock.now(),
        )
        session.rollback()

    report = _deliver(container, FileMailer(tmp_path / "mail"))

    assert report == DeliveryReport()
    assert latest_message(tmp_path / "mail") is None
    with container.stores.session() as session:
        assert pending_count(session) == 0


def test_a_sign_in_link_is_mailed_once_and_then_forgotten(
    container: Container, tmp_path: Path, unique: str
) -> None:
    home = make_home(container, tag=unique)
    owner, email = _ana(home, unique)
    message_id = _queue(
        container, owner, NoticeKind.SIGN_IN_LINK, {"at": "2026-11-29T04:30:00Z", "link": LINK}
    )
    mailer = FileMailer(tmp_path / "mail")

    assert _deliver(container, mailer) == DeliveryReport(sent=1)
    assert _deliver(container, mailer, later=timedelta(hours=2)) == DeliveryReport()

    assert len(list((tmp_path / "mail").glob("*.eml"))) == 1
    message = latest_message(tmp_path / "mail", to=email)
    assert message is not None
    assert message["Subject"] == "Your Tutela sign-in link"
    assert LINK in message.get_content()
    row = _row(container, message_id)
    assert row.sent_at == container.clock.now()
    assert row.params_sealed == b""
    assert row.last_error is None
    with container.stores.session() as session:
        assert pending_count(session) == 0


def test_mail_files_are_owner_only(container: Container, tmp_path: Path, unique: str) -> None:
    home = make_home(container, tag=unique)
    owner, _ = _ana(home, unique)
    _queue(container, owner)
    folder = tmp_path / "mail"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)

    _deliver(container, FileMailer(folder))

    files = list(folder.iterdir())
    assert [f.suffix for f in files] == [".eml"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_failing_mailer_is_retried_with_backoff_and_only_the_error_class_kept(
    container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique)
    owner, email = _ana(home, unique)
    message_id = _queue(container, owner)
    mailer = RefusingMailer()
    start = container.clock.now()

    assert _deliver(container, mailer) == DeliveryReport(failed=1)
    row = _row(container, message_id)
    assert row.attempts == 1
    assert row.last_error == "ConnectionRefusedError"
    assert row.next_attempt_at == start + timedelta(seconds=30)
    assert row.sent_at is None

    assert _deliver(container, mailer, later=timedelta(seconds=29)) == DeliveryReport()
    assert mailer.calls == 1

    assert _deliver(container, mailer, later=timedelta(seconds=30)) == DeliveryReport(failed=1)
    row = _row(container, message_id)
    assert row.attempts == 2
    assert row.next_attempt_at == start + timedelta(seconds=30 + 60)
    assert email not in _stored_bytes(container).decode(errors="replace")
    with container.stores.session() as session:
        assert pending_count(session) == 1


def test_delivery_gives_up_after_max_attempts(
    container: Container, clock: FakeClock, unique: str
) -> None:
    home = make_home(container, tag=unique)
    owner, _ = _ana(home, unique)
    message_id = _queue(container, owner)
    mailer = RefusingMailer()

    reports = []
    for _ in range(MAX_ATTEMPTS):
        clock.advance(timedelta(hours=1))
        reports.append(_deliver(container, mailer))

    assert reports[:-1] == [DeliveryReport(failed=1)] * (MAX_ATTEMPTS - 1)
    assert reports[-1] == DeliveryReport(gave_up=1)
    clock.advance(timedelta(days=1))
    assert _deliver(container, mailer) == DeliveryReport()
    assert mailer.calls == MAX_ATTEMPTS
    row = _row(container, message_id)
    assert row.attempts == MAX_ATTEMPTS
    assert row.sent_at is None
    assert row.last_error == "ConnectionRefusedError"
    assert row.params_sealed == b""
    with container.stores.session() as session:
        assert pending_count(session) == 0


def test_a_security_team_notice_goes_to_the_alert_address_without_personal_data(
    container: Container, tmp_path: Path
) -> None:
    message_id = _queue(
        container,
        None,
        NoticeKind.DEFENDED_MODE,
        {"at": "2026-11-29T04:30:00+00:00", "count": "240", "minutes": "30"},
    )

    assert _deliver(container, FileMailer(tmp_path / "mail")) == DeliveryReport(sent=1)

    message = latest_message(tmp_path / "mail")
    assert message is not None
    assert message["To"] == container.settings.security_alert_email
    assert message["Subject"] == "Tutela entered defended mode"
    body = message.get_content()
    assert "240" in body and "30 minutes" in body and "2026-11-29 04:30 UTC" in body
    row = _row(container, message_id)
    assert (row.household_id, row.account_id, row.staff_id) == (None, None, None)


def test_notices_to_the_team_refuse_personal_data(container: Container, unique: str) -> None:
    home = make_home(container, tag=unique)
    owner, _ = _ana(home, unique)
    at = container.clock.now().isoformat()
    with container.stores.session() as session:
        with pytest.raises(ValueError, match="parameters"):
            enqueue(
                session,
                container.vault.keys,
                kind=NoticeKind.DEFENDED_MODE,
                owner=None,
                params={"at": at, "address": ADDRESS},
                now=container.clock.now(),
            )
        with pytest.raises(ValueError, match="recipient"):
            enqueue(
                session,
                container.vault.keys,
                kind=NoticeKind.DEFENDED_MODE,
                owner=owner,
                params={"at": at},
                now=container.clock.now(),
            )
        with pytest.raises(ValueError, match="recipient"):
            enqueue(
                session,
                container.vault.keys,
                kind=NoticeKind.NEW_DEVICE_SIGN_IN,
                owner=None,
                params={"at": at, "device": DEVICE, "address": ADDRESS},
                now=container.clock.now(),
            )
        with pytest.raises(ValueError, match="time zone"):
            enqueue(
                session,
                container.vault.keys,
                kind=NoticeKind.PASSWORD_CHANGED,
                owner=owner,
                params={"at": "2026-11-29T04:30:00"},
                now=container.clock.now(),
            )
        assert pending_count(session) == 0


def test_sealed_parameters_moved_to_another_notice_do_not_open(
    container: Container, tmp_path: Path, unique: str
) -> None:
    """The AEAD binds parameters to their row: a copied link is refused, not mailed."""
    home = make_home(container, tag=unique)
    owner, _ = _ana(home, unique)
    link_id = _queue(
        container, owner, NoticeKind.SIGN_IN_LINK, {"at": "2026-11-29T04:30:00Z", "link": LINK}
    )
    other_id = _queue(container, owner, NoticeKind.PASSWORD_CHANGED, {"at": "2026-11-29T04:30:00Z"})
    with container.stores.session() as session:
        link_row = session.get(OutboxMessage, link_id)
        other_row = session.get(OutboxMessage, other_id)
        assert link_row is not None and other_row is not None
        other_row.params_sealed = link_row.params_sealed
        session.delete(link_row)
        session.commit()

    report = _deliver(container, FileMailer(tmp_path / "mail"))

    assert report == DeliveryReport(gave_up=1)
    assert latest_message(tmp_path / "mail") is None
    assert _row(container, other_id).last_error == "IntegrityFailure"


def test_a_recipient_whose_profile_key_was_destroyed_is_given_up(
    container: Container, tmp_path: Path, unique: str
) -> None:
    """Erasure destroys the profile key (S6): the notice can no longer be read or addressed."""
    home = make_home(container, tag=unique)
    owner, _ = _ana(home, unique)
    message_id = _queue(container, owner)
    assert owner.household_id is not None and owner.profile_id is not None
    container.vault.keys.destroy_profile_key(
        household_id=owner.household_id, profile_id=owner.profile_id
    )

    report = _deliver(container, FileMailer(tmp_path / "mail"))

    assert report == DeliveryReport(gave_up=1)
    row = _row(container, message_id)
    assert (row.last_error, row.attempts, row.sent_at) == ("recipient_gone", MAX_ATTEMPTS, None)
    assert latest_message(tmp_path / "mail") is None


def test_a_recipient_whose_account_was_deleted_is_given_up(
    container: Container, tmp_path: Path, unique: str, backend: str
) -> None:
    home = make_home(container, tag=unique)
    owner, _ = _ana(home, unique)
    message_id = _queue(container, owner)
    # Deleting the account row alone breaks foreign keys, which are switched off for it.
    with container.stores.main.connect() as conn:
        if backend == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        else:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            delete(Account).where(
                Account.household_id == owner.household_id, Account.id == owner.id
            )
        )
        conn.commit()
        if backend == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")

    report = _deliver(container, FileMailer(tmp_path / "mail"))

    assert report == DeliveryReport(gave_up=1)
    row = _row(container, message_id)
    assert (row.last_error, row.attempts, row.sent_at) == ("recipient_gone", MAX_ATTEMPTS, None)
    assert row.params_sealed == b""
    assert latest_message(tmp_path / "mail") is None


def test_concurrent_workers_send_each_notice_once(container: Container, unique: str) -> None:
    home = make_home(container, tag=unique)
    owner, _ = _ana(home, unique)
    queued = {str(_queue(container, owner)) for _ in range(8)}
    mailer = RecordingMailer(delay=0.05)
    reports: list[DeliveryReport] = []

    def worker() -> None:
        reports.append(_deliver(container, mailer))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(r.sent for r in reports) == 8
    assert len(mailer.sent) == 8
    with container.stores.session() as session:
        sent = set(
            map(
                str,
                session.scalars(select(OutboxMessage.id).where(OutboxMessage.sent_at.is_not(None))),
            )
        )
    assert sent == queued
