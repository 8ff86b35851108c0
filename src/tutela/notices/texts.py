"""The words of each notice: its kinds, templates, advice and the plain-text rendering.

Kept apart from the outbox (`notices.service`), which queues, seals and delivers them.
Every text says what happened, when, and what to do; none carries a password, a code or
content of a recording (R6, S4, C6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from tutela.notices.devices import describe_device
from tutela.settings import Settings

SECURITY_PAGE: Final = "/account/security"


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

TEMPLATES: Final[Mapping[NoticeKind, _Template]] = {
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

TEAM_KINDS: Final = frozenset(
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
    template = TEMPLATES[kind]
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
    if kind not in TEAM_KINDS:
        lines.append("Tutela will never ask for your password by email.")
    lines.append("-- Tutela")
    return template.subject, "\n".join(lines) + "\n"
