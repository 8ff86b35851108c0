"""Reading what Tutela mailed in tests: the `.eml` files of the outbox's file transport."""

from __future__ import annotations

import re
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses

from tutela.container import Container

LINK = re.compile(r"/login/link#(tsl_[A-Za-z0-9_\-]+)")


def emailed_link(container: Container, email: str) -> str:
    """The token of the newest sign-in (or sign-up) link mailed to `email`."""
    directory = container.settings.mail_path
    parser = BytesParser(policy=policy.default)
    for path in sorted(directory.glob("*.eml"), reverse=True) if directory.is_dir() else []:
        message = parser.parsebytes(path.read_bytes())
        recipients = {a.lower() for _, a in getaddresses(message.get_all("To", []))}
        if email.lower() not in recipients:
            continue
        found = LINK.search(str(message.get_body(("plain",)).get_content()))  # type: ignore[union-attr]
        if found is not None:
            return found.group(1)
    raise AssertionError(f"no sign-in link was mailed to {email}")
