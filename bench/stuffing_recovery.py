"""Recovery abuse: many "forgot password" requests for real and unknown addresses.

`POST /api/v1/auth/recovery {email}` must answer 202 whatever the address (it never says
whether there is an account), send at most one email per account per
`TUTELA_RECOVERY_EMAIL_MINUTES` window (5 by default), and never hand the requester a
session or a token: the link goes to the mailbox, which the attacker does not have. The
requests come from a pool of addresses nearly all in distinct /24s, over raw keep-alive
connections, half for real accounts (a few hundred, so each is asked for many times)
and half for addresses with no account. Afterwards each real account's password is
tried once from a fresh address: a request must not have changed or locked it.

A tree without the endpoint (404 or 405 to the first request) reports "unavailable".
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import random
import time
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import httpx

from stuffing_attack import RawConnection
from stuffing_common import ATTACKER_AGENT, SIGN_IN, Person, classify, json_of
from stuffing_setup import public_addresses

RECOVERY = "/api/v1/auth/recovery"
DEFAULT_EMAIL_MINUTES = 5.0
MAIL_SETTLE_S = 5.0
MAIL_WAIT_S = 60.0
PASSWORD_CHECKS = 20
# Keys of an answer that would hand the requester a way in.
GRANTS = {"token", "device_token", "challenge", "session", "link", "reset_token"}


def recovery_abuse(
    *,
    base_url: str,
    mail_dir: Path,
    people: list[Person],
    requests: int,
    sources: int,
    accounts: int,
    connections: int,
    seed: int,
    avoid: set[str],
) -> dict[str, Any]:
    """Send the requests, wait for the mail to settle, and judge what came of them."""
    rng = random.Random(seed * 104_729 + 3)
    pool = public_addresses(rng, sources + PASSWORD_CHECKS, set(avoid))
    pool, fresh = pool[:sources], pool[sources:]
    probe = httpx.post(
        base_url + RECOVERY,
        json={"email": f"probe{rng.randrange(10**9)}@mail.test"},
        headers={"x-forwarded-for": pool[0], "user-agent": ATTACKER_AGENT},
        timeout=30.0,
    )
    if probe.status_code in (404, 405):
        return {"status": "unavailable", "probe_status": probe.status_code}
    real = rng.sample(people, min(accounts, len(people)))
    plan = [
        (
            rng.choice(real).email
            if rng.random() < 0.5
            else f"{rng.choice('abcdefghij')}{rng.randrange(10**9)}@mail.test",
            rng.choice(pool),
        )
        for _ in range(requests)
    ]
    settle(mail_dir)  # notices of the attack, delivered late, are not counted
    before = {p.name for p in mail_dir.glob("*.eml")} if mail_dir.is_dir() else set()
    started = time.perf_counter()
    answers = asyncio.run(send_all(base_url, plan, connections))
    elapsed = time.perf_counter() - started
    mail = new_mail(mail_dir, before)
    window_s = float(os.environ.get("TUTELA_RECOVERY_EMAIL_MINUTES", DEFAULT_EMAIL_MINUTES)) * 60

    asked: dict[str, list[float]] = collections.defaultdict(list)
    for (email, _), (_, _, at) in zip(plan, answers, strict=True):
        asked[email.casefold()].append(at)
    real_emails = {p.email.casefold() for p in real}
    # One email per address per window: as many as the windows its requests spanned.
    allowed = {e: math.floor((max(t) - min(t)) / window_s) + 1 for e, t in asked.items()}
    sent = collections.Counter(to for to, _ in mail if to in asked)
    subjects = collections.Counter(subject for to, subject in mail if to in asked)
    over = {e: n for e, n in sent.items() if n > allowed[e]}
    statuses = collections.Counter(status for status, _, _ in answers)
    granted = sum(1 for status, keys, _ in answers if status == 201 or keys & GRANTS)
    intact = password_checks(base_url, real[:PASSWORD_CHECKS], fresh)
    taken_over = granted + intact["changed"]
    return {
        "status": "measured",
        "requests": len(plan),
        "sources": sources,
        "real_accounts": len(real),
        "requests_for_real": sum(1 for e, _ in plan if e.casefold() in real_emails),
        "elapsed_s": elapsed,
        "answers": {str(k): v for k, v in statuses.items()},
        "answers_all_202": set(statuses) == {202},
        "granted_to_requester": granted,
        "passwords_checked": intact,
        "taken_over": taken_over,
        "window_minutes": window_s / 60,
        "emails_sent": sum(sent.values()),
        "emails_sent_to_real": sum(n for e, n in sent.items() if e in real_emails),
        "emails_sent_to_unknown": sum(n for e, n in sent.items() if e not in real_emails),
        "emails_allowed": sum(allowed[e] for e in asked if e in real_emails),
        "addresses_over_allowance": len(over),
        "over_allowance_examples": dict(list(over.items())[:3]),
        "email_subjects": dict(subjects.most_common(5)),
        "other_mail": sum(1 for to, _ in mail if to not in asked),
    }


async def send_all(
    base_url: str, plan: list[tuple[str, str]], connections: int
) -> list[tuple[int, set[str], float]]:
    """Each request once: (status, the answer's keys, when it was answered)."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    answers: list[tuple[int, set[str], float]] = [(0, set(), 0.0)] * len(plan)
    issued = iter(range(len(plan)))

    async def connection() -> None:
        raw = RawConnection(host, int(port))
        try:
            for n in issued:
                email, source = plan[n]
                try:
                    status, _, body = await raw.send(
                        "POST",
                        RECOVERY,
                        {"email": email},
                        {"x-forwarded-for": source, "user-agent": ATTACKER_AGENT},
                    )
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    status, body = 0, None
                keys = set(body) if isinstance(body, dict) else set()
                answers[n] = (status, keys, time.time())
        finally:
            raw.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return answers


def settle(mail_dir: Path) -> None:
    """Wait until the outbox has written nothing for `MAIL_SETTLE_S` (at most `MAIL_WAIT_S`)."""
    deadline = time.monotonic() + MAIL_WAIT_S
    count, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_count = len(list(mail_dir.glob("*.eml"))) if mail_dir.is_dir() else 0
        if now_count != count:
            count, quiet_since = now_count, time.monotonic()
        elif time.monotonic() - quiet_since >= MAIL_SETTLE_S:
            return
        time.sleep(0.5)


def new_mail(mail_dir: Path, before: set[str]) -> list[tuple[str, str]]:
    """(recipient, subject) of each message written after `before`, once the outbox is quiet."""
    settle(mail_dir)
    found: list[tuple[str, str]] = []
    for path in sorted(mail_dir.glob("*.eml")) if mail_dir.is_dir() else []:
        if path.name in before:
            continue
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        subject = str(message.get("Subject", ""))
        found += [(a.casefold(), subject) for _, a in getaddresses(message.get_all("To", []))]
    return found


def password_checks(base_url: str, people: list[Person], fresh: list[str]) -> dict[str, int]:
    """Each password tried once from a new address: still accepted (or not decidable)."""
    seen: collections.Counter[str] = collections.Counter()
    with httpx.Client(timeout=60.0) as client:
        for person, source in zip(people, fresh, strict=False):
            answer = client.post(
                base_url + SIGN_IN,
                json={"email": person.email, "password": person.password},
                headers={"x-forwarded-for": source, "user-agent": "TutelaApp/3.2 (bench)"},
            )
            outcome = classify(answer.status_code, json_of(answer))
            if outcome in ("signed_in_full", "signed_in_other", "second_factor_required"):
                seen["accepted"] += 1
            elif outcome == "link_sent":
                seen["accepted"] += 1  # the password was right; the mailbox confirms
            elif outcome == "invalid_credentials":
                seen["changed"] += 1
            else:
                seen["undecided"] += 1
    return {
        "accepted": seen["accepted"],
        "changed": seen["changed"],
        "undecided": seen["undecided"],
    }
