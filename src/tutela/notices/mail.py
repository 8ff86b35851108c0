"""The mail port: a `Mailer` protocol, an SMTP mailer and a mailer writing `.eml` files.

Embedded mode and tests use `FileMailer` (RFC 5322 files under `<home>/mail`); a
deployment with `TUTELA_SMTP_HOST` set uses `SmtpMailer`. Messages carry sign-in links,
which are secrets: files are owner-only, and SMTP credentials never travel unencrypted.

Each message is handed on with a reference (the outbox row's id). A mailer that keeps a
copy (`FileMailer`) files it under that reference, so an erasure can discard it and the
remnant check can ask whether it is still held (A5, C1). A message that went out by SMTP
has left Tutela: it is in the recipient's mailbox and cannot be recalled.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import ssl
import stat
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, make_msgid, parseaddr
from pathlib import Path
from typing import Protocol

from tutela.core.errors import ConfigurationError
from tutela.core.ids import uuid7
from tutela.settings import Settings


class Mailer(Protocol):
    def send(self, message: EmailMessage, *, reference: str | None = None) -> None:
        """Hand `message` on for delivery; raise if it was not accepted. A mailer that
        keeps a copy keeps it under `reference` (a UUID), so it can be discarded."""
        ...

    def discard(self, references: Iterable[str]) -> int:
        """Remove the copies kept under `references`; how many there were. A message
        that has left Tutela (SMTP) cannot be recalled: there is nothing to remove."""
        ...

    def held(self, references: Iterable[str]) -> set[str]:
        """Which of `references` this mailer still keeps a copy of."""
        ...


def _reference(reference: str) -> str:
    """A reference is a UUID in its canonical form: never a path."""
    canonical = str(uuid.UUID(reference))
    if canonical != reference:
        raise ValueError("A mail reference is a UUID in its canonical form.")
    return canonical


def build_message(
    *, sender: str, to: str, subject: str, body: str, now: datetime | None = None
) -> EmailMessage:
    """A plain-text message with the headers RFC 5322 asks for (Date, Message-ID).

    `Auto-Submitted` (RFC 3834) keeps out-of-office replies from answering it.
    """
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime((now or datetime.now(UTC)).astimezone(UTC))
    # An explicit domain: without one make_msgid asks DNS for this host's name.
    domain = parseaddr(sender)[1].rpartition("@")[2] or "tutela.invalid"
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message


class FileMailer:
    """Writes each message to `<directory>/<reference>.eml`: owner-only, whole or not at all.

    The reference is the outbox row's id (a UUIDv7), or a fresh UUIDv7 when none is
    given; sending the same reference again replaces the file rather than adding one.
    The directory is made (or tightened to) 0700. Each file is first written to a
    temporary name opened with O_EXCL and mode 0600, synced, then renamed into place, so
    a reader never sees half a message. `discard` removes a message with its temporary
    file, if a crash left one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _prepare(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(self.directory.stat().st_mode) & 0o077:
            self.directory.chmod(0o700)

    def _paths(self, reference: str) -> tuple[Path, Path]:
        name = f"{_reference(reference)}.eml"
        return self.directory / name, self.directory / f".{name}.tmp"

    def send(self, message: EmailMessage, *, reference: str | None = None) -> None:
        self._prepare()
        final, temporary = self._paths(reference or str(uuid7()))
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()  # left by a crash in an earlier attempt at this message
        data = message.as_bytes(policy=policy.SMTP)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
        _sync_directory(self.directory)

    def discard(self, references: Iterable[str]) -> int:
        removed = 0
        for reference in references:
            for path in self._paths(reference):
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                if path.suffix == ".eml":
                    removed += 1
        if removed and self.directory.is_dir():
            _sync_directory(self.directory)
        return removed

    def held(self, references: Iterable[str]) -> set[str]:
        return {
            reference
            for reference in references
            if any(path.exists() for path in self._paths(reference))
        }


def _sync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SmtpMailer:
    """Sends through an SMTP relay, one connection per message (smtplib).

    With `starttls` the session is upgraded before anything else is said, verifying the
    server's certificate and name (`ssl.create_default_context()`). Credentials are
    refused without STARTTLS: they would cross the network in clear.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        starttls: bool,
        username: str | None,
        password: str | None,
        timeout: float = 10,
    ) -> None:
        if username is not None and not starttls:
            raise ConfigurationError("SMTP credentials need STARTTLS (TUTELA_SMTP_STARTTLS).")
        self.host = host
        self.port = port
        self.starttls = starttls
        self.username = username
        self._password = password
        self.timeout = timeout

    def send(self, message: EmailMessage, *, reference: str | None = None) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username is not None:
                smtp.login(self.username, self._password or "")
            smtp.send_message(message)

    def discard(self, references: Iterable[str]) -> int:
        """Nothing to remove: Tutela keeps no copy of what it sent, and a message in the
        recipient's mailbox cannot be recalled."""
        return 0

    def held(self, references: Iterable[str]) -> set[str]:
        return set()


def mailer_from_settings(settings: Settings) -> Mailer:
    """SMTP when `smtp_host` is set, else `.eml` files under `settings.mail_path`."""
    if settings.smtp_host:
        return SmtpMailer(
            settings.smtp_host,
            settings.smtp_port,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=(
                settings.smtp_password.get_secret_value() if settings.smtp_password else None
            ),
        )
    return FileMailer(settings.mail_path)


def latest_message(directory: Path, *, to: str | None = None) -> EmailMessage | None:
    """The newest `.eml` in `directory` (addressed to `to`, when given), or None.

    Newest by the time the file was written; files written within the same clock tick
    follow their references, UUIDv7s in the order their notices were queued.
    """
    if not directory.is_dir():
        return None
    wanted = to.strip().lower() if to is not None else None
    parser = BytesParser(policy=policy.default)
    files = [(path.stat().st_mtime_ns, path.name, path) for path in directory.glob("*.eml")]
    for _, _, path in sorted(files, reverse=True):
        message = parser.parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        if wanted is None:
            return message
        recipients = {address.lower() for _, address in getaddresses(message.get_all("To", []))}
        if wanted in recipients:
            return message
    return None
