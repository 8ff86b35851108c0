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
from datetime import UTC, datetime, timedelta
from enum import StrEnum
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
from tutela.settings import Settings
from tutela.vault import crypto
from tutela.vault.keystore import KeyStore

NOTICES_KEY: Final = "notices"
"""Service key sealing the parameters of notices to the operator's security team."""

MAX_ATTEMPTS: Final = 8
FIRST_RETRY: Final = timedelta(seconds=30)
LONGEST_RETRY: Final = timedelta(hours=1)
RECIPIENT_GONE: Final = "recipient_gone"
SECURITY_PAGE: Final = "/account/security"
_MAX_PARAM_CHARS: Final = 2048


class NoticeKind(StrEnum):
    NEW_DEVICE_SIGN_IN = "new_device_sign_in"
    SECOND_FACTOR_FAILED = "second_factor_failed"
    FACTOR_ADDED = "factor_added"
    FACTOR_REMOVED = "factor_removed"
    RECOVERY_CODE_USED = "recovery_code_used"
    PASSWORD_BREACHED = "password_breached"  # noqa: S105 - a kind, not a password
    PASSWORD_CHANGED = "password_changed"  # noqa: S105
    SESSIONS_ENDED = "sessions_ended"
    SIGN_IN_LINK = "sign_in_link"
    PASSWORD_RESET_LINK = "password_reset_link"  # noqa: S105
    RECOVERY_DELAYED = "recovery_delayed"
    RECOVERY_CANCELLED = "recovery_cancelled"
    RECOVERY_COMPLETED = "recovery_completed"
    DEFENDED_MODE = "defended_mode"
    STAFF_WELCOME = "staff_welcome"
    SIGN_UP_EXISTING = "sign_up_existing"
    SIGN_UP_CONFIRM = "sign_up_confirm"
    INACTIVE_CHILD = "inactive_child"
    ERASURE_COMPLETED = "erasure_completed"
    ERASURE_DEADLINE = "erasure_deadline"
    ERASURE_FAILED = "erasure_failed"
    ERASURE_IN_HOME = "erasure_in_home"
    CONSENT_CHANGED = "consent_changed"
    CONSENT_CHANGED_OWN = "consent_changed_own"
    COLLECTION_REFUSED = "collection_refused"
    COLLECTION_REFUSED_OWN = "collection_refused_own"
    ERASURE_CONFIRMED = "erasure_confirmed"
    PARENTAL_CONSENT_ASK = "parental_consent_ask"
    EXPORT_READY = "export_ready"


@dataclass(frozen=True)
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    """Failed this time, to be tried again later."""
    gave_up: int = 0
    """Will never be sent: the recipient is gone or erased, or every attempt failed."""


# --- templates -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    subject: str
    happened: str
    """What happened, with the placeholders `render` fills in."""
    required: frozenset[str]
    optional: frozenset[str] = frozenset()
    advice: str = "not_you"


_WHERE = frozenset({"device", "address"})

ERASED_WHAT: Final[Mapping[str, str]] = {
    "item": "one recording or location record",
    "items": "some of the recordings and location records of one profile",
    "profile": "a profile, with everything recorded of it",
    "child_profile": "a child's profile, with everything recorded of the child",
    "household": "your household's account: every profile, recording, device and sign-in",
    "selection": "recordings and location records you chose, one by one, of one profile",
    "kinds": "every recording (or location record) of the kinds you chose, of one profile",
    "range": "the recordings and location records of one profile from the time you chose",
    "all_items": "every recording and location record of one profile, up to now",
}
"""What an erasure notice says was erased: general words, never whose name (C6)."""

_TEMPLATES: Final[Mapping[NoticeKind, _Template]] = {
    NoticeKind.NEW_DEVICE_SIGN_IN: _Template(
        "New sign-in to your Tutela account",
        "Your Tutela account was signed in to from a device we have not seen before.",
        frozenset({"at", "device", "address"}),
    ),
    NoticeKind.SECOND_FACTOR_FAILED: _Template(
        "Someone entered your Tutela password",
        "Someone entered the correct password for your Tutela account but failed the "
        "second sign-in step, so they were not let in. Because the password was right, "
        "someone else may know it.",
        frozenset({"at", "device", "address"}),
        advice="change_password",
    ),
    NoticeKind.FACTOR_ADDED: _Template(
        "A sign-in method was added to your Tutela account",
        "A sign-in method was added to your Tutela account: {factor}.",
        frozenset({"at", "factor"}),
        _WHERE,
    ),
    NoticeKind.FACTOR_REMOVED: _Template(
        "A sign-in method was removed from your Tutela account",
        "A sign-in method was removed from your Tutela account: {factor}.",
        frozenset({"at", "factor"}),
        _WHERE,
    ),
    NoticeKind.RECOVERY_CODE_USED: _Template(
        "A recovery code was used on your Tutela account",
        "A recovery code was used to sign in to your Tutela account. Each code works only "
        "once.{remaining}",
        frozenset({"at"}),
        _WHERE | {"count"},
    ),
    NoticeKind.PASSWORD_BREACHED: _Template(
        "Change your Tutela password",
        "The password of your Tutela account appears in a list of passwords exposed by a "
        "data breach on another site. Nothing shows it was misused here, but anyone who "
        "has that list can try it. Please choose a new password you use nowhere else.",
        frozenset({"at"}),
        advice="change_password",
    ),
    NoticeKind.PASSWORD_CHANGED: _Template(
        "Your Tutela password was changed",
        "The password of your Tutela account was changed.",
        frozenset({"at"}),
        _WHERE,
    ),
    NoticeKind.SESSIONS_ENDED: _Template(
        "You were signed out of Tutela everywhere",
        "Every session of your Tutela account was ended{ended}; each device has to sign in again.",
        frozenset({"at"}),
        _WHERE | {"count"},
    ),
    NoticeKind.SIGN_IN_LINK: _Template(
        "Your Tutela sign-in link",
        "Use this link to finish signing in to Tutela:\n\n{link}\n\nIt works once, and "
        "only within {ttl} minutes of the request.",
        frozenset({"at", "link"}),
        _WHERE,
        advice="link",
    ),
    NoticeKind.PASSWORD_RESET_LINK: _Template(
        "Reset your Tutela password",
        "Use this link to choose a new password for your Tutela account:\n\n{link}\n\n"
        "It works once, and only within {minutes} minutes of the request.",
        frozenset({"at", "link", "minutes"}),
        _WHERE,
        advice="link",
    ),
    NoticeKind.RECOVERY_DELAYED: _Template(
        "Someone asked to reset your Tutela password",
        "Someone used a password reset link for your Tutela account without its second "
        "sign-in step. The new password takes effect on {until}, and then your second "
        "sign-in methods are removed, unless you cancel before then. Until then, nothing "
        "changes.\n\nIf it was not you, cancel it now with this link:\n\n{link}",
        frozenset({"at", "link", "until"}),
        _WHERE,
        advice="recovery",
    ),
    NoticeKind.RECOVERY_CANCELLED: _Template(
        "A password reset of your Tutela account was cancelled",
        "The pending password reset of your Tutela account was cancelled; your password "
        "and sign-in methods did not change.",
        frozenset({"at"}),
        _WHERE,
    ),
    NoticeKind.RECOVERY_COMPLETED: _Template(
        "Your Tutela account was recovered",
        "The password of your Tutela account was reset with an emailed link{how}. Every "
        "session was ended and every device must sign in again.",
        frozenset({"at"}),
        _WHERE | {"factor"},
    ),
    NoticeKind.DEFENDED_MODE: _Template(
        "Tutela entered defended mode",
        "Tutela entered defended mode: sign-in failures{failures} look like credential "
        "stuffing. Risky sign-ins (from new devices or suspicious sources) now need a "
        "second step{duration}.",
        frozenset({"at"}),
        frozenset({"count", "minutes"}),
        advice="team",
    ),
    NoticeKind.STAFF_WELCOME: _Template(
        "Your Tutela operator account",
        "An operator account was created for you on Tutela.{setup}",
        frozenset({"at"}),
        frozenset({"link"}),
        advice="staff",
    ),
    NoticeKind.SIGN_UP_EXISTING: _Template(
        "Someone tried to open a Tutela account with your address",
        "Someone tried to open a new Tutela account with your email address, which already"
        " has one. No account was created.",
        frozenset({"at"}),
        _WHERE,
    ),
    NoticeKind.SIGN_UP_CONFIRM: _Template(
        "Confirm your new Tutela account",
        "Use this link to confirm your email address and open your new Tutela account:"
        "\n\n{link}\n\nIt works once, and only within {ttl} minutes. Until it is used, "
        "nobody can sign in to the account; if it expires, sign in with your password and "
        "we will send a new one.",
        frozenset({"at", "link"}),
        _WHERE,
        advice="sign_up",
    ),
    NoticeKind.INACTIVE_CHILD: _Template(
        "A child's profile in your Tutela home will be erased",
        "The profile of {profile} in your Tutela home has not been used for a long time. "
        "Its recordings, transcripts, locations and details will be erased on {erase_on} "
        "(A2), unless you choose to keep it before then, or the profile is used again.",
        frozenset({"at", "profile", "erase_on"}),
        advice="inactive_child",
    ),
    NoticeKind.ERASURE_COMPLETED: _Template(
        "Your Tutela erasure request is complete",
        "Erasure request {request} is complete, and a check of every store found nothing "
        "left. Its signed receipt is at {link}",
        frozenset({"at", "request", "link"}),
        advice="receipt",
    ),
    NoticeKind.ERASURE_DEADLINE: _Template(
        "Erasure requests near their deadline",
        "{count} erasure request(s) have used {percent}% of the time allowed to complete "
        "them and are not complete yet.",
        frozenset({"at", "count", "percent"}),
        advice="erasure_team",
    ),
    NoticeKind.ERASURE_FAILED: _Template(
        "An erasure request failed",
        "{count} erasure request(s) failed: a step kept failing, or the check of every "
        "store kept finding something left. Nothing is called deleted, and the request "
        "will not run again until someone retries it; its deadline still runs.",
        frozenset({"at", "count"}),
        advice="erasure_failed",
    ),
    NoticeKind.ERASURE_IN_HOME: _Template(
        "Data in your Tutela home is being erased",
        "An erasure in your Tutela home: {what}. Tutela erases it from every store it "
        "keeps, checks what is left, and then signs a receipt.\n\n"
        "  Asked by: {who}\n  Request:  {request}\n  Receipt:  {link} (once complete)",
        frozenset({"at", "who", "what", "request", "link"}),
        advice="home_erasure",
    ),
    # C6: every consent action for a child reaches each guardian; an adult's own change
    # is confirmed. Purpose titles come from the purposes file, never typed by a person.
    NoticeKind.CONSENT_CHANGED: _Template(
        "Consent for a child in your Tutela home was changed",
        "What Tutela may do with the recordings of {profile} was changed.{turned}\n\n"
        "  Changed by:     {who}\n  Notice version: {notice}\n  See and change it: {link}",
        frozenset({"at", "profile", "who", "notice", "link"}),
        frozenset({"on", "off"}),
        advice="consent",
    ),
    NoticeKind.CONSENT_CHANGED_OWN: _Template(
        "Your Tutela consent choices were changed",
        "What Tutela may do with your recordings was changed.{turned}\n\n"
        "  Notice version: {notice}\n  See and change it: {link}",
        frozenset({"at", "notice", "link"}),
        frozenset({"on", "off"}),
        advice="consent",
    ),
    NoticeKind.COLLECTION_REFUSED: _Template(
        "Recording of a child in your Tutela home was stopped",
        "All further recording and use of {profile}'s information was refused: every "
        "consent is withdrawn, and the home's devices can no longer upload anything of "
        "{profile}. What is already kept stays until it is deleted, which you can ask for "
        "on the privacy page.\n\n  Stopped by: {who}\n  See it:     {link}",
        frozenset({"at", "profile", "who", "link"}),
        advice="consent",
    ),
    NoticeKind.COLLECTION_REFUSED_OWN: _Template(
        "You stopped all recording of you in Tutela",
        "All further recording and use of your information was refused: every consent is "
        "withdrawn, and the home's devices can no longer upload anything of you. What is "
        "already kept stays until it is deleted, which you can ask for on the privacy "
        "page.\n\n  See it: {link}",
        frozenset({"at", "link"}),
        advice="consent",
    ),
    NoticeKind.ERASURE_CONFIRMED: _Template(
        "Your Tutela erasure request was received",
        "You asked Tutela to erase {what}. Tutela destroys its keys first, which makes it "
        "unreadable at once; then it removes every copy, checks what is left, and signs a "
        "receipt.\n\n  Request:  {request}\n  Receipt:  {link} (once complete)",
        frozenset({"at", "what", "request", "link"}),
        advice="own_erasure",
    ),
    NoticeKind.PARENTAL_CONSENT_ASK: _Template(
        "A parent's consent is asked for on Tutela",
        "Someone in a Tutela household asked for a parent's consent before Tutela keeps "
        "anything about a child: recordings, locations or details (C3). If you are the "
        "child's parent, sign in to give or refuse consent, and to choose what may be "
        "kept:\n\n{link}",
        frozenset({"at", "link"}),
        advice="parental_consent",
    ),
    NoticeKind.EXPORT_READY: _Template(
        "Your Tutela download is ready",
        "The copy of the data you asked for is ready to download (signed in) at:\n\n"
        "{link}\n\nThe link works until {until}; then the copy is erased, and you can ask "
        "for a new one at any time.",
        frozenset({"at", "link", "until"}),
        advice="export",
    ),
}

_TEAM_KINDS: Final = frozenset(
    {NoticeKind.DEFENDED_MODE, NoticeKind.ERASURE_DEADLINE, NoticeKind.ERASURE_FAILED}
)


def _security_url(settings: Settings) -> str:
    return settings.origin + SECURITY_PAGE


def _advice(kind: str, settings: Settings) -> str:
    url = _security_url(settings)
    not_you = f"If it wasn't you, go to {url} now: end all your sessions and change your password."
    if kind == "not_you":
        return "If this was you, there is nothing to do.\n" + not_you
    if kind == "change_password":
        return (
            f"Please change your password now at {url}. If it wasn't you signing in, "
            "also end all your sessions there."
        )
    if kind == "link":
        return (
            "If you did not ask for this, ignore this message: nobody can use your account "
            f"without the link. If these keep coming, change your password at {url}."
        )
    if kind == "recovery":
        return (
            f"You can also cancel it at {settings.origin}/account/recovery after you sign "
            "in. If it was you, there is nothing to do: wait for the date above."
        )
    if kind == "sign_up":
        return (
            "If you did not open an account, ignore this message: without the link the "
            "account stays closed."
        )
    if kind == "inactive_child":
        return f"To keep it, sign in at {settings.origin}/account/privacy and choose Keep."
    if kind == "receipt":
        return "Anyone can check the receipt's signature with `tutela receipt verify`."
    if kind == "home_erasure":
        return (
            "While your account exists, every deletion in your home is listed at "
            f"{settings.origin}/account/privacy. The receipt can be fetched without signing "
            "in, and anyone can check its signature with `tutela receipt verify`."
        )
    if kind == "consent":
        return (
            "If you did not expect this, go to "
            f"{url}: end all your sessions and change your password."
        )
    if kind == "own_erasure":
        return (
            f"Every deletion you asked for is listed at {settings.origin}/account/privacy. "
            "The receipt can be fetched without signing in, and anyone can check its "
            "signature with `tutela receipt verify`.\nIf you did not ask for this, go to "
            f"{_security_url(settings)} now: end all your sessions and change your password."
        )
    if kind == "export":
        return (
            "If you did not ask for a copy, go to "
            f"{url} now: end all your sessions and change your password."
        )
    if kind == "erasure_team":
        return "List them with `tutela erasure list --open` and see what holds them up."
    if kind == "erasure_failed":
        return (
            "Find it with `tutela erasure list --open` (status failed) and see its step and "
            "findings with `tutela erasure show ID`; once the fault is fixed, run it again "
            "with `tutela erasure retry ID`."
        )
    if kind == "parental_consent":
        return (
            "If you are not this child's parent, ignore this message. Tutela keeps your "
            "address only to ask for this consent, and deletes it if no consent comes in "
            "time (C5)."
        )
    if kind == "staff":
        return f"If you did not expect this, tell your security team. Manage your sign-in at {url}."
    return "Check the sign-in logs and the audit trail; defended mode ends by itself."


def _display_time(at: str) -> str:
    return datetime.fromisoformat(at).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _clean(value: str) -> str:
    """One line of printable text: user agents and labels come from whoever signed in."""
    text = "".join(ch if ch.isprintable() else " " for ch in value)
    return " ".join(text.split())[:200]


def _turned(params: Mapping[str, str]) -> str:
    """The purposes a consent notice says were turned on and off, one line each."""
    lines = [
        f"\n  {label} {_clean(params[key])}"
        for key, label in (("on", "Turned on: "), ("off", "Turned off:"))
        if params.get(key)
    ]
    return ("\n" + "".join(lines)) if lines else ""


def render(kind: NoticeKind, params: Mapping[str, str], settings: Settings) -> tuple[str, str]:
    """The subject and plain-text body of a notice. Passwords are never a parameter."""
    template = _TEMPLATES[kind]
    count = params.get("count", "")
    fill = {
        "factor": _clean(params.get("factor", "")),
        "count": count,
        "link": params.get("link", ""),
        "ttl": str(settings.email_link_ttl_minutes),
        "remaining": f" You have {count} recovery codes left." if count else "",
        "ended": f" ({count} sessions)" if count else "",
        "failures": f" ({count} of them)" if count else "",
        "duration": f" for the next {params['minutes']} minutes" if params.get("minutes") else "",
        "profile": _clean(params.get("profile", "")),
        "erase_on": _clean(params.get("erase_on", "")),
        "request": _clean(params.get("request", "")),
        "who": _clean(params.get("who", "")),
        "what": ERASED_WHAT.get(params.get("what", ""), ""),
        "percent": params.get("percent", ""),
        "notice": params.get("notice", ""),
        "turned": _turned(params),
        "minutes": params.get("minutes", ""),
        "until": _display_time(params["until"]) if params.get("until") else "",
        "how": (
            " after the waiting period; its second sign-in methods were removed"
            if params.get("factor") == "removed"
            else ""
        ),
        "setup": (
            f"\n\nSet up how you sign in with this link, which works once:\n\n{params['link']}"
            if params.get("link")
            else f"\n\nSign in at {settings.origin}."
        ),
    }
    lines = [template.happened.format(**fill), ""]
    lines.append(f"  When:    {_display_time(params['at'])}")
    if params.get("device"):
        lines.append(f"  Device:  {describe_device(params['device'])}")
    if params.get("address"):
        lines.append(f"  Address: {_clean(params['address'])}")
    lines += ["", _advice(template.advice, settings), ""]
    if kind not in _TEAM_KINDS:
        lines.append("Tutela will never ask for your password by email.")
    lines.append("-- Tutela")
    return template.subject, "\n".join(lines) + "\n"


def _check_params(kind: NoticeKind, owner: Owner | None, params: Mapping[str, str]) -> None:
    template = _TEMPLATES[kind]
    if (owner is None) != (kind in _TEAM_KINDS):
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
    template = _TEMPLATES[kind]
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
