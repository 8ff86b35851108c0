"""Reading what Tutela mailed in tests: the `.eml` files of the outbox's file transport."""

from __future__ import annotations

import re
import time
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path

import httpx

from tutela.container import Container

LINK = re.compile(r"/login/link#(tsl_[A-Za-z0-9_\-]+)")


def emailed_link(container: Container, email: str) -> str:
    """The token of the newest sign-in (or sign-up) link mailed to `email`."""
    return link_in(container.settings.mail_path, email)


_HANDED_OUT: set[str] = set()


def link_in(directory: Path, email: str, *, wait_seconds: float = 0) -> str:
    """The newest link token in `directory`'s mail to `email`. A served process delivers
    after answering, so with `wait_seconds` this waits for a link it has not returned
    before (links work once: an older one would be a used one)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        found = _newest_link(directory, email)
        if found is not None and not (wait_seconds and found in _HANDED_OUT):
            _HANDED_OUT.add(found)
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"no sign-in link was mailed to {email}")
        time.sleep(0.05)


def _newest_link(directory: Path, email: str) -> str | None:
    parser = BytesParser(policy=policy.default)
    for path in sorted(directory.glob("*.eml"), reverse=True) if directory.is_dir() else []:
        message = parser.parsebytes(path.read_bytes())
        recipients = {a.lower() for _, a in getaddresses(message.get_all("To", []))}
        if email.lower() not in recipients:
            continue
        found = LINK.search(str(message.get_body(("plain",)).get_content()))  # type: ignore[union-attr]
        if found is not None:
            return found.group(1)
    return None


def sign_in_served(
    base: str, email: str, password: str, mail: Path, *, headers: dict[str, str] | None = None
) -> httpx.Response:
    """Sign in to a served process over HTTP: the password, then the emailed link that a
    device Tutela has not seen must follow (R6). The answer that holds the token."""
    r = httpx.post(
        base + "/api/v1/auth/token",
        json={"email": email, "password": password},
        headers=headers or {},
        timeout=30,
    )
    if r.status_code == 202 and r.json() == {"status": "link_sent"}:
        token = link_in(mail, email, wait_seconds=10)
        r = httpx.post(
            base + "/api/v1/auth/token/link",
            json={"token": token},
            headers=headers or {},
            timeout=30,
        )
    return r


def mail_to(directory: Path, email: str, *, subject: str | None = None) -> list[str]:
    """What each message mailed to `email` says (subject, blank line, plain body), oldest
    first; only those with `subject`, when given."""
    parser = BytesParser(policy=policy.default)
    found = []
    for path in sorted(directory.glob("*.eml")) if directory.is_dir() else []:
        message = parser.parsebytes(path.read_bytes())
        recipients = {a.lower() for _, a in getaddresses(message.get_all("To", []))}
        if email.lower() not in recipients:
            continue
        if subject is not None and message["Subject"] != subject:
            continue
        body = str(message.get_body(("plain",)).get_content())  # type: ignore[union-attr]
        found.append(f"{message['Subject']}\n\n{body}")
    return found


def notices_to(directory: Path, email: str) -> list[str]:
    """What each message mailed to `email` says (subject, blank line, plain body), oldest
    first."""
    return mail_to(directory, email)
