"""The ingestion gates: an upload is taken only when the consent ledger allows the purpose
it serves for the person it is about, asked before a byte of it is read (C3, C6).

Every kind of upload serves one purpose: voice recordings, clips, snapshots, thumbnails
and transcripts are kept under `storage`; location batches under `precise_geolocation`.
The ledger's answer (`ConsentLedger.decide`, the one question, C3) becomes a refusal
with a stable code and a plain sentence a device can show:

| the ledger's reason | code (403) |
| --- | --- |
| `parental_consent_required` (a child without a guardian's verified consent) | same |
| `withdrawn`, a child's (a guardian withdrew it or refused collection) | `collection_refused` |
| `withdrawn`, an adult's (they withdrew it, or refused everything) | `consent_withdrawn` |
| `fresh_consent_needed` (the grant was given under an older notice) | `fresh_consent_needed` |
| `not_granted` (an operator's purpose that is off until an adult agrees) | `consent_not_granted` |

The ledger does not say whether a withdrawal was one purpose or a refusal of everything
(and nothing else may read it), so the code tells a child's from an adult's: for a
child, any withdrawal by a guardian is a refusal of further collection (C6).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from tutela.consent.ledger import Decision, Reason, Subject
from tutela.consent.purposes import Builtin
from tutela.core.errors import ConsentRefused
from tutela.households.models import Profile
from tutela.vault import rules
from tutela.vault.models import ItemKind


class ConsentQuestion(Protocol):
    """The port the gates ask: `ConsentLedger.decide` (the container's `consent`)."""

    def decide(
        self, subject: Subject, purpose: str, at: datetime, *, session: Session | None = None
    ) -> Decision: ...


PURPOSE_OF_KIND: dict[ItemKind, str] = {
    ItemKind.VOICE: Builtin.STORAGE,
    ItemKind.VIDEO: Builtin.STORAGE,
    ItemKind.SNAPSHOT: Builtin.STORAGE,
    ItemKind.THUMBNAIL: Builtin.STORAGE,
    ItemKind.TRANSCRIPT: Builtin.STORAGE,
    ItemKind.LOCATION: Builtin.PRECISE_GEOLOCATION,
}
GATED_PURPOSES = (Builtin.STORAGE, Builtin.PRECISE_GEOLOCATION)
_WHAT: dict[str, tuple[str, str]] = {
    Builtin.STORAGE: ("recordings", "recordings are kept"),
    Builtin.PRECISE_GEOLOCATION: ("location sharing", "locations are kept"),
}


@dataclass(frozen=True)
class Refusal:
    code: str
    detail: str


def refusal(decision: Decision, *, purpose: str, child: bool) -> Refusal | None:
    """The refusal a decision means for an upload, or None when it is allowed (pure)."""
    if decision.allowed:
        return None
    what, kept = _WHAT.get(purpose, ("uploads", "uploads are taken"))
    if decision.reason is Reason.PARENTAL_CONSENT_REQUIRED:
        return Refusal(
            "parental_consent_required",
            f"A parent must give verified consent before {kept} for this child.",
        )
    if decision.reason is Reason.WITHDRAWN:
        if child:
            return Refusal("collection_refused", f"A parent has stopped {what} for this child.")
        return Refusal("consent_withdrawn", f"This person has turned off {what}.")
    if decision.reason is Reason.FRESH_CONSENT_NEEDED:
        who = "a parent" if child else "this person"
        return Refusal(
            "fresh_consent_needed",
            f"The consent notice has changed: {who} must agree to the new one before {kept} again.",
        )
    return Refusal("consent_not_granted", f"This person has not agreed to {what}.")


def check(
    session: Session, consent: ConsentQuestion, *, profile: Profile, purpose: str, now: datetime
) -> None:
    """Refuse the upload unless `purpose` is allowed for `profile` now (C3, C6). Asked in
    the upload's own session, so the check costs no connection of its own."""
    subject = Subject.of(profile)
    decision = consent.decide(subject, purpose, now, session=session)
    refused = refusal(decision, purpose=purpose, child=subject.is_child)
    if refused is not None:
        raise ConsentRefused(refused.detail, code=refused.code, purpose=purpose)


@dataclass(frozen=True)
class PurposeState:
    purpose: str
    kinds: list[str]
    """This device's kinds of upload that serve the purpose."""
    accepted: bool
    code: str | None
    detail: str | None


@dataclass(frozen=True)
class ProfileState:
    profile_id: uuid.UUID
    kind: str
    purposes: list[PurposeState]


def device_state(
    session: Session,
    consent: ConsentQuestion,
    *,
    device_kind: str,
    profiles: list[Profile],
    now: datetime,
) -> list[ProfileState]:
    """What a device may upload now for each profile, purpose by purpose: the same
    question, and the same answers, as the gates themselves."""
    kinds = {
        purpose: [
            k.value
            for k, p in PURPOSE_OF_KIND.items()
            if p == purpose and device_kind in rules.DEVICE_KINDS[k]
        ]
        for purpose in GATED_PURPOSES
    }
    states = []
    for profile in profiles:
        subject = Subject.of(profile)
        purposes = []
        for purpose, of_device in kinds.items():
            if not of_device:
                continue
            decision = consent.decide(subject, purpose, now, session=session)
            refused = refusal(decision, purpose=purpose, child=subject.is_child)
            purposes.append(
                PurposeState(
                    purpose=purpose,
                    kinds=of_device,
                    accepted=refused is None,
                    code=None if refused is None else refused.code,
                    detail=None if refused is None else refused.detail,
                )
            )
        states.append(ProfileState(profile.id, profile.kind, purposes))
    return states
