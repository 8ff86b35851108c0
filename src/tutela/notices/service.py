"""Security notices: queued with the action that caused them, rendered and mailed later.

A notice is added to the caller's session, so it goes out only if the action commits
(transactional outbox). Its parameters (time, device, address, links) are sealed under
the recipient's key and bound to the row; the address is looked up only at delivery, and
the parameters are wiped once the message has been sent.

A notice that names another profile (a guardian told about their child) records that
profile, and a notice whose household, recipient or subject was erased is never sent,
even if a restored backup brings its row back (A5, S8).

Obligations: R6 (a sign-in from a new device is announced to the account holder) and
S4 (OWASP Authentication Cheat Sheet: a correct password followed by a failed second
factor is announced, since the password is then probably known to someone else).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from tutela.core.errors import IntegrityFailure, KeyUnavailable
from tutela.core.ids import uuid7
from tutela.db.engine import Stores
from tutela.identity.owners import Owner, email_of, owner_of_row
from tutela.notices.devices import describe_device
from tutela.notices.erased import ERASED, erased
from tutela.notices.mail import Mailer, build_message
from tutela.notices.models import OutboxMessage
from tutela.notices.texts import (
    ERASED_WHAT,
    TEAM_KINDS,
    TEMPLATES,
    NoticeKind,
    render,
)
from tutela.settings import Settings
from tutela.vault import crypto
from tutela.vault.keystore import KeyStore

__all__ = [
    "ERASED_WHAT",
    "NOTICES_KEY",
    "DeliveryReport",
    "NoticeKind",
    "deliver_pending",
    "enqueue",
    "enqueue_to_contact",
    "pending_count",
    "render",
    "retry_delay",
]
"""The texts (`NoticeKind`, `render`, `ERASED_WHAT`) live in `notices.texts`; they are
named here too, for the callers that queue notices."""

NOTICES_KEY: Final = "notices"
"""Service key sealing the parameters of notices to the operator's security team."""

MAX_ATTEMPTS: Final = 8
FIRST_RETRY: Final = timedelta(seconds=30)
LONGEST_RETRY: Final = timedelta(hours=1)
RECIPIENT_GONE: Final = "recipient_gone"
_MAX_PARAM_CHARS: Final = 2048


@dataclass(frozen=True)
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    """Failed this time, to be tried again later."""
    gave_up: int = 0
    """Will never be sent: the recipient is gone or erased, or every attempt failed."""


def _check_params(kind: NoticeKind, owner: Owner | None, params: Mapping[str, str]) -> None:
    template = TEMPLATES[kind]
    if (owner is None) != (kind in TEAM_KINDS):
        raise ValueError(f"A {kind} notice has the wrong kind of recipient.")
    names = set(params)
    if not template.required <= names or not names <= template.required | template.optional:
        raise ValueError(f"A {kind} notice has the wrong parameters.")
    for value in params.values():
        if not isinstance(value, str) or len(value) > _MAX_PARAM_CHARS:
            raise ValueError(f"A {kind} notice parameter is not a short string.")
    try:
        at = datetime.fromisoformat(params["at"])
    except ValueError as exc:
        raise ValueError("A notice's time is not an ISO 8601 time.") from exc
    if at.tzinfo is None:
        raise ValueError("A notice's time has no time zone.")
    if "what" in params and params["what"] not in ERASED_WHAT:
        raise ValueError("A notice says what was erased in words of its own.")
    for number in ("count", "minutes", "percent", "notice"):
        if number in params and not (params[number].isascii() and params[number].isdigit()):
            raise ValueError(f"A notice's {number} is not a number.")
    link = params.get("link")
    if link is not None and (
        not link.startswith(("https://", "http://"))
        or not link.isprintable()
        or any(ch.isspace() for ch in link)
    ):
        raise ValueError("A notice's link is not a web address.")


# --- queueing --------------------------------------------------------------------------


def _aad(
    message_id: uuid.UUID, kind: str, owner: Owner | None, about: uuid.UUID | None = None
) -> bytes:
    """Binds sealed parameters to their row, their kind, their recipient and whom they
    are about."""
    recipient = owner.ref if owner is not None else "team"
    bound = b"tutela:notice:" + message_id.bytes + f":{kind}:{recipient}".encode()
    return bound if about is None else bound + b":about:" + about.bytes


def _key(
    keys: KeyStore, owner: Owner | None, *, now: datetime, about: uuid.UUID | None = None
) -> bytes:
    """The key a notice's parameters are sealed under: the team's service key; else, for a
    notice about another profile of the home (an inactive child, named to a guardian), that
    profile's key, so the parameters (the child's name) die with the child's keys, in every
    copy of the outbox too (S6); else the recipient's own key."""
    if owner is None:
        return keys.service_key(NOTICES_KEY, now=now)
    if about is not None and owner.household_id is not None:
        return keys.profile_key(household_id=owner.household_id, profile_id=about)
    return owner.sealing_key(keys, now=now)


def enqueue(
    session: Session,
    keys: KeyStore,
    *,
    kind: NoticeKind,
    owner: Owner | None,
    params: Mapping[str, str],
    now: datetime,
    about_profile_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Queue a notice to `owner` (None: the operator's security team) in `session`.

    Nothing is committed here: the notice goes out only if the caller's action commits.
    Notices to the team take only counts and times, so they hold no personal data.
    `about_profile_id` names the profile of the owner's household that the notice speaks
    of, when it is not the owner's own: erasing that profile erases the notice (A5).
    """
    if "device" in params:
        # Only the description is kept, never the client's own User-Agent text.
        params = {**params, "device": describe_device(params["device"])}
    _check_params(kind, owner, params)
    message_id = uuid7()
    about = about_profile_id if owner is not None else None
    sealed = crypto.seal(
        _key(keys, owner, now=now, about=about),
        json.dumps(dict(params), sort_keys=True).encode(),
        aad=_aad(message_id, kind, owner, about),
    )
    columns = (
        owner.columns()
        if owner is not None
        else {"household_id": None, "account_id": None, "staff_id": None}
    )
    session.add(
        OutboxMessage(
            id=message_id,
            kind=kind.value,
            params_sealed=sealed,
            created_at=now,
            next_attempt_at=now,
            attempts=0,
            about_profile_id=about,
            **columns,
        )
    )
    return message_id


def pending_count(session: Session) -> int:
    """Notices not yet sent and still to be tried."""
    count = session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.sent_at.is_(None), OutboxMessage.attempts < MAX_ATTEMPTS)
    )
    return int(count or 0)


# --- delivery --------------------------------------------------------------------------


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff after the `attempts`-th failure: 30 s, 1 min, 2 min ... 1 h."""
    return min(FIRST_RETRY * (1 << max(0, attempts - 1)), LONGEST_RETRY)


def _due(
    now: datetime, household_id: uuid.UUID | None, kinds: Collection[NoticeKind]
) -> list[ColumnElement[bool]]:
    due = [OutboxMessage.sent_at.is_(None), OutboxMessage.attempts < MAX_ATTEMPTS]
    if household_id is None:
        due.append(OutboxMessage.next_attempt_at <= now)
    else:
        # The household's last chance (its keys are about to go): whatever the backoff.
        due.append(OutboxMessage.household_id == household_id)
    if kinds:
        due.append(OutboxMessage.kind.in_([k.value for k in kinds]))
    return due


def _claim(
    session: Session,
    *,
    now: datetime,
    postgresql: bool,
    household_id: uuid.UUID | None = None,
    kinds: Collection[NoticeKind] = (),
    tried: Collection[uuid.UUID] = (),
) -> OutboxMessage | None:
    """The next due notice, held by this worker until its transaction ends.

    PostgreSQL locks the row and lets other workers skip past it. SQLite has no row
    locks: a guarded UPDATE takes its single write lock and fails over to the next
    row if another worker changed this one first. `tried` are rows this pass already
    attempted (a household's are due again at once).
    """
    due = _due(now, household_id, kinds)
    if tried:
        due.append(OutboxMessage.id.not_in(list(tried)))
    query = (
        select(OutboxMessage)
        .where(*due)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(1)
        .execution_options(populate_existing=True)
    )
    while True:
        if postgresql:
            return session.scalars(query.with_for_update(skip_locked=True)).first()
        row = session.scalars(query).first()
        if row is None:
            return None
        claimed = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row.id, OutboxMessage.attempts == row.attempts)
            .where(*due)
            .values(attempts=OutboxMessage.attempts)
            .execution_options(synchronize_session=False)
        )
        if getattr(claimed, "rowcount", 0) == 1:
            return row
        session.rollback()


def _give_up(row: OutboxMessage, reason: str) -> None:
    row.attempts = MAX_ATTEMPTS
    row.last_error = reason[:80]
    row.params_sealed = b""


def _deliver_one(
    stores: Stores,
    session: Session,
    keys: KeyStore,
    mailer: Mailer,
    settings: Settings,
    row: OutboxMessage,
    *,
    now: datetime,
) -> str:
    """Try one claimed notice; answers "sent", "failed" or "gave_up"."""
    if erased(stores, keys, row, now=now):
        # Its household, recipient or subject was erased (a restored backup brought the
        # row back): never sent, whatever its key still opens (S8).
        _give_up(row, ERASED)
        return "gave_up"
    if row.kind == NoticeKind.PARENTAL_CONSENT_ASK:
        return _deliver_to_contact(keys, mailer, settings, row, now=now)
    try:
        owner = (
            owner_of_row(session, row)
            if row.account_id is not None or row.staff_id is not None
            else None
        )
        key = _key(keys, owner, now=now, about=row.about_profile_id)
        to = (
            settings.security_alert_email
            if owner is None
            else email_of(session, keys, owner, now=now)
        )
    except (LookupError, KeyUnavailable):
        # The account, or its profile key, is gone (erased): there is nobody to tell.
        _give_up(row, RECIPIENT_GONE)
        return "gave_up"
    try:
        kind = NoticeKind(row.kind)
        params = json.loads(
            crypto.open_sealed(
                key, row.params_sealed, aad=_aad(row.id, row.kind, owner, row.about_profile_id)
            )
        )
        subject, body = render(kind, params, settings)
    except (IntegrityFailure, ValueError, KeyError, TypeError) as exc:
        # Tampered, unreadable or of an unknown kind: no retry can fix it.
        _give_up(row, type(exc).__name__)
        return "gave_up"
    return _hand_on(mailer, settings, row, to=to, subject=subject, body=body, now=now)


def _hand_on(
    mailer: Mailer,
    settings: Settings,
    row: OutboxMessage,
    *,
    to: str,
    subject: str,
    body: str,
    now: datetime,
) -> str:
    """Hand one rendered notice to the mailer; answers "sent", "failed" or "gave_up"."""
    try:
        mailer.send(
            build_message(sender=settings.mail_from, to=to, subject=subject, body=body, now=now),
            reference=str(row.id),
        )
    except Exception as exc:  # any failure to build or hand on the message is retried
        # The class name only: messages of mail errors quote addresses and server replies.
        row.attempts += 1
        row.last_error = type(exc).__name__[:80]
        if row.attempts >= MAX_ATTEMPTS:
            _give_up(row, row.last_error)
            return "gave_up"
        row.next_attempt_at = now + retry_delay(row.attempts)
        return "failed"
    row.sent_at = now
    row.last_error = None
    # The parameters (a sign-in link among them) are needed no more once sent.
    row.params_sealed = b""
    return "sent"


# --- notices to a contact that is no account (C5) ----------------------------------------


def _contact_aad(message_id: uuid.UUID, kind: str, child_profile_id: uuid.UUID) -> bytes:
    return (
        b"tutela:notice:" + message_id.bytes + f":{kind}:contact".encode() + child_profile_id.bytes
    )


def enqueue_to_contact(
    session: Session,
    keys: KeyStore,
    *,
    kind: NoticeKind,
    household_id: uuid.UUID,
    child_profile_id: uuid.UUID,
    address: str,
    params: Mapping[str, str],
    now: datetime,
) -> uuid.UUID:
    """Queue a notice to an address that belongs to no account: a parent asked for
    consent (C5). The address travels in the sealed parameters, under the child's key,
    and is wiped from the row once the notice is sent or given up; erasing the child
    erases the row (it names the child as `about_profile_id`)."""
    if kind is not NoticeKind.PARENTAL_CONSENT_ASK:
        raise ValueError(f"A {kind} notice is not sent to a contact.")
    template = TEMPLATES[kind]
    if set(params) != template.required:
        raise ValueError(f"A {kind} notice has the wrong parameters.")
    message_id = uuid7()
    sealed = crypto.seal(
        keys.profile_key(household_id=household_id, profile_id=child_profile_id),
        json.dumps({**params, "to": address}, sort_keys=True).encode(),
        aad=_contact_aad(message_id, kind.value, child_profile_id),
    )
    session.add(
        OutboxMessage(
            id=message_id,
            kind=kind.value,
            household_id=household_id,
            account_id=None,
            staff_id=None,
            about_profile_id=child_profile_id,
            params_sealed=sealed,
            created_at=now,
            next_attempt_at=now,
            attempts=0,
        )
    )
    return message_id


def _deliver_to_contact(
    keys: KeyStore, mailer: Mailer, settings: Settings, row: OutboxMessage, *, now: datetime
) -> str:
    if row.household_id is None or row.about_profile_id is None:
        _give_up(row, RECIPIENT_GONE)
        return "gave_up"
    try:
        key = keys.profile_key(household_id=row.household_id, profile_id=row.about_profile_id)
        params = json.loads(
            crypto.open_sealed(
                key, row.params_sealed, aad=_contact_aad(row.id, row.kind, row.about_profile_id)
            )
        )
        to = str(params.pop("to"))
        subject, body = render(NoticeKind(row.kind), params, settings)
    except KeyUnavailable:
        _give_up(row, RECIPIENT_GONE)  # the child's keys are gone: erased
        return "gave_up"
    except (IntegrityFailure, ValueError, KeyError, TypeError) as exc:
        _give_up(row, type(exc).__name__)
        return "gave_up"
    return _hand_on(mailer, settings, row, to=to, subject=subject, body=body, now=now)


def deliver_pending(
    stores: Stores,
    keys: KeyStore,
    mailer: Mailer,
    settings: Settings,
    *,
    now: datetime,
    batch: int = 50,
    household_id: uuid.UUID | None = None,
    kinds: Collection[NoticeKind] = (),
) -> DeliveryReport:
    """Send up to `batch` due notices, each in its own short transaction.

    Each notice is claimed, sent, and marked sent (or rescheduled) in one transaction
    that commits right after the send, so a crash re-sends at most the one message in
    flight: delivery is at-least-once, with duplicates only in that window (a mailer
    that keeps copies keeps one per notice). Several workers may run at once: on
    PostgreSQL claimed rows are skipped (`SKIP LOCKED`). A failed send is retried with
    exponential backoff up to `MAX_ATTEMPTS` times; only the error's class name is
    recorded.

    With `household_id`, only that household's pending notices (of `kinds`, when
    given) are tried, each once, whatever their backoff: what a household's closure
    does before its keys are destroyed.
    """
    counts = {"sent": 0, "failed": 0, "gave_up": 0}
    postgresql = stores.main.dialect.name == "postgresql"
    tried: list[uuid.UUID] = []
    with stores.session() as session:
        for _ in range(batch):
            row = _claim(
                session,
                now=now,
                postgresql=postgresql,
                household_id=household_id,
                kinds=kinds,
                tried=tried,
            )
            if row is None:
                break
            tried.append(row.id)
            outcome = _deliver_one(stores, session, keys, mailer, settings, row, now=now)
            session.commit()
            counts[outcome] += 1
    return DeliveryReport(**counts)
