"""A real SMTP exchange: SmtpMailer talking to an aiosmtpd server on the loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from tutela.core.errors import ConfigurationError
from tutela.core.ids import uuid7
from tutela.notices.mail import (
    FileMailer,
    SmtpMailer,
    build_message,
    latest_message,
    mailer_from_settings,
)
from tutela.settings import Settings


class Inbox:
    """An aiosmtpd handler keeping every envelope it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def _message() -> EmailMessage:
    return build_message(
        sender="Tutela <no-reply@tutela.example>",
        to="ana@example.com",
        subject="New sign-in to your Tutela account",
        body="Your Tutela account was signed in to from a device we have not seen before.\n",
    )


def test_smtp_mailer_delivers_to_a_real_server(smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    mailer = SmtpMailer("127.0.0.1", port, starttls=False, username=None, password=None)

    mailer.send(_message())

    assert len(inbox.envelopes) == 1
    envelope = inbox.envelopes[0]
    assert envelope.mail_from == "no-reply@tutela.example"
    assert envelope.rcpt_tos == ["ana@example.com"]
    received = message_from_bytes(envelope.original_content, policy=policy.default)
    assert received["Subject"] == "New sign-in to your Tutela account"
    assert received["Message-ID"].endswith("@tutela.example>")
    assert received["Date"]
    assert received["Auto-Submitted"] == "auto-generated"
    assert isinstance(received, EmailMessage)
    assert "device we have not seen before" in received.get_content()


def test_an_unreachable_server_raises_for_the_outbox_to_retry() -> None:
    mailer = SmtpMailer(
        "127.0.0.1", _free_port(), starttls=False, username=None, password=None, timeout=2
    )
    with pytest.raises(ConnectionRefusedError):
        mailer.send(_message())


def test_credentials_are_refused_without_starttls() -> None:
    with pytest.raises(ConfigurationError):
        SmtpMailer("127.0.0.1", 25, starttls=False, username="tutela", password="pw")


def test_settings_choose_smtp_when_a_host_is_set_else_files(tmp_path: Path) -> None:
    smtp = mailer_from_settings(
        Settings(
            environment="test",
            home=tmp_path,
            smtp_host="mail.example",
            smtp_username="tutela",
            smtp_password=SecretStr("pw"),
        )
    )
    files = mailer_from_settings(Settings(environment="test", home=tmp_path))

    assert isinstance(smtp, SmtpMailer) and smtp.host == "mail.example" and smtp.starttls
    assert isinstance(files, FileMailer) and files.directory == tmp_path / "mail"


def test_latest_message_picks_the_newest_for_a_recipient(tmp_path: Path) -> None:
    mailer = FileMailer(tmp_path / "mail")
    for to, subject in [("ana@example.com", "first"), ("bruno@example.com", "other")]:
        mailer.send(build_message(sender="t@tutela.example", to=to, subject=subject, body="."))
    mailer.send(
        build_message(sender="t@tutela.example", to="Ana@Example.com", subject="second", body=".")
    )

    newest = latest_message(tmp_path / "mail", to="ana@example.com")
    other = latest_message(tmp_path / "mail", to="bruno@example.com")

    assert newest is not None and newest["Subject"] == "second"
    assert other is not None and other["Subject"] == "other"
    assert latest_message(tmp_path / "mail", to="nobody@example.com") is None
    assert latest_message(tmp_path / "absent") is None
    assert not list((tmp_path / "mail").glob(".*.tmp"))


def test_the_file_mailer_discards_the_copies_it_keeps(tmp_path: Path) -> None:
    """An erasure names the notices it erases by their references (A5, C1)."""
    mailer = FileMailer(tmp_path / "mail")
    kept, erased = str(uuid7()), str(uuid7())
    for reference in (kept, erased):
        mailer.send(
            build_message(sender="t@tutela.example", to="a@example.com", subject="s", body="."),
            reference=reference,
        )
    (tmp_path / "mail" / f".{erased}.eml.tmp").write_bytes(b"half a message")

    assert mailer.held([kept, erased, str(uuid7())]) == {kept, erased}
    assert mailer.discard([erased]) == 1

    assert mailer.held([kept, erased]) == {kept}
    assert sorted(p.name for p in (tmp_path / "mail").iterdir()) == [f"{kept}.eml"]
    assert mailer.discard([erased]) == 0  # discarding twice does no harm


def test_a_mail_reference_is_never_a_path(tmp_path: Path) -> None:
    mailer = FileMailer(tmp_path / "mail")
    message = build_message(sender="t@tutela.example", to="a@example.com", subject="s", body=".")
    for reference in ("../outside", "x/../../etc", str(uuid7()).upper()):
        with pytest.raises(ValueError, match="UUID"):
            mailer.send(message, reference=reference)
        with pytest.raises(ValueError, match="UUID"):
            mailer.discard([reference])
    assert not (tmp_path / "outside.eml").exists()
