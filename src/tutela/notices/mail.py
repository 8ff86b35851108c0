"""The mail port: a `Mailer` protocol, an SMTP mailer and a mailer writing `.eml` files.

Embedded mode and tests use `FileMailer` (RFC 5322 files under `<home>/mail`); a
deployment with `TUTELA_SMTP_HOST` set uses `SmtpMailer`. Messages carry sign-in links,
which are secrets: files are owner-only, and SMTP credentials never travel unencrypted.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import ssl
import stat
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
    def send(self, message: EmailMessage) -> None:
        """Hand `message` on for delivery; raise if it was not accepted."""
        ...


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
    """Writes each message to `<directory>/<uuid7>.eml`: owner-only, whole or not at all.

    The directory is made (or tightened to) 0700. Each file is first written to a
    temporary name opened with O_EXCL and mode 0600, synced, then renamed into place, so
    a reader never sees half a message. Names sort in the order messages were written.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _prepare(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(self.directory.stat().st_mode) & 0o077:
            self.directory.chmod(0o700)

    def send(self, message: EmailMessage) -> None:
        self._prepare()
        name = f"{uuid7()}.eml"
        temporary = self.directory / f".{name}.tmp"
        final = self.directory / name
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

    def send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username is not None:
                smtp.login(self.username, self._password or "")
            smtp.send_message(message)


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
    """The newest `.eml` in `directory` (addressed to `to`, when given), or None."""
    if not directory.is_dir():
        return None
    wanted = to.strip().lower() if to is not None else None
    parser = BytesParser(policy=policy.default)
    for path in sorted(directory.glob("*.eml"), reverse=True):
        message = parser.parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        if wanted is None:
            return message
        recipients = {address.lower() for _, address in getaddresses(message.get_all("To", []))}
        if wanted in recipients:
            return message
    return None
