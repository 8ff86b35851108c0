"""A new-device sign-in notice names the device in a few safe words, whatever the client
sent as its User-Agent (S4: the owner must be able to trust a security email)."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser

from fastapi.testclient import TestClient

from tests.functional.conftest import owner_email, sign_in
from tutela.container import Container
from tutela.households.service import CreatedHome

# What a client can put in one header line: a link, HTML, a lure and 2 KB of padding.
HOSTILE_UA = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 "
    "SECURITY TEAM: your account is locked, restore it at https://tutela-help.example/r "
    '<a href="https://evil.example/">restore</a><img src=x onerror=alert(1)> ' + "Z" * 2048
)


def test_a_hostile_user_agent_never_reaches_the_new_device_email(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    assert sign_in(client, email, user_agent=HOSTILE_UA)
    container.deliver_notices()
    parser = BytesParser(policy=policy.default)
    messages = [
        parser.parsebytes(path.read_bytes())
        for path in sorted(container.settings.mail_path.glob("*.eml"))
    ]
    told = [m for m in messages if m["Subject"] == "New sign-in to your Tutela account"]
    assert len(told) == 1
    body = told[0].get_content()
    device_lines = [line for line in body.splitlines() if line.strip().startswith("Device:")]
    assert device_lines == ["  Device:  Firefox on Linux"]
    assert body.count("http") == 1  # the link to the security page, Tutela's own
    for piece in ("tutela-help", "evil.example", "<", "SECURITY TEAM", "ZZZZ", "onerror"):
        assert piece not in body
