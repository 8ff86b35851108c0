"""Telling people of consent actions (C6): each guardian of a child hears of every change
and every refusal of collection, and an adult's change of their own consent is confirmed.

The notices are queued in the action's own transaction (the outbox), so a change that
does not commit tells nobody, and a change that commits always does. A notice about a
child names the child and is sealed under the child's key (`about_profile_id`), so it is
erased with the child's profile (A5); it names the purposes by their titles from the
purposes file and never quotes anything recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from sqlalchemy.orm import Session

from tutela.consent.ledger import Change, Subject
from tutela.consent.purposes import Catalogue
from tutela.core.errors import KeyUnavailable
from tutela.households import service as households
from tutela.households.models import Profile
from tutela.identity.owners import Owner
from tutela.identity.service import Principal
from tutela.notices.service import NoticeKind, enqueue
from tutela.vault.keystore import KeyStore

YOU: Final = "you"
A_GUARDIAN: Final = "another guardian"


def consent_page(origin: str, profile_id: uuid.UUID) -> str:
    """Where a profile's consent is seen and changed in the console."""
    return f"{origin}/privacy/{profile_id}/consent"


def _name(session: Session, keys: KeyStore, household_id: uuid.UUID, profile_id: uuid.UUID) -> str:
    profile = session.get(Profile, (household_id, profile_id))
    if profile is None:
        return ""
    try:
        return households.profile_view(keys, profile).name
    except KeyUnavailable:  # the profile is being erased: say nothing of it by name
        return ""


def _titles(catalogue: Catalogue, changes: Sequence[Change], granted: bool) -> str:
    return ", ".join(
        catalogue[c.purpose].title if c.purpose in catalogue else c.purpose
        for c in changes
        if c.granted is granted
    )


def tell(
    session: Session,
    keys: KeyStore,
    catalogue: Catalogue,
    *,
    subject: Subject,
    principal: Principal,
    changes: Sequence[Change],
    refused: bool,
    notice_version: int,
    origin: str,
    now: datetime,
) -> int:
    """Queue the notices of one consent action in `session`; returns how many.

    A child's: one to each guardian ("you" to the one who acted, else their name). An
    adult's own: a confirmation to that adult. Nothing is committed here.
    """
    link = consent_page(origin, subject.profile_id)
    at = now.isoformat()
    if not subject.is_child:
        if refused:
            own_kind, own_params = NoticeKind.COLLECTION_REFUSED_OWN, {"at": at, "link": link}
        else:
            own_kind = NoticeKind.CONSENT_CHANGED_OWN
            own_params = {"at": at, "link": link, "notice": str(notice_version)}
            own_params |= _turned(catalogue, changes)
        enqueue(session, keys, kind=own_kind, owner=principal.owner, params=own_params, now=now)
        return 1
    child = _name(session, keys, subject.household_id, subject.profile_id) or "your child"
    actor = _name(session, keys, principal.household_id, principal.profile_id) or A_GUARDIAN
    guardians = households.guardians_of(
        session, household_id=subject.household_id, child_profile_id=subject.profile_id
    )
    for account in guardians:
        params = {
            "at": at,
            "profile": child,
            "who": YOU if account.id == principal.account_id else actor,
            "link": link,
        }
        if refused:
            kind = NoticeKind.COLLECTION_REFUSED
        else:
            kind = NoticeKind.CONSENT_CHANGED
            params |= {"notice": str(notice_version)} | _turned(catalogue, changes)
        enqueue(
            session,
            keys,
            kind=kind,
            owner=Owner.account(account.household_id, account.id, account.profile_id),
            params=params,
            now=now,
            # It names the child: erased with the child's profile (A5).
            about_profile_id=subject.profile_id,
        )
    return len(guardians)


def _turned(catalogue: Catalogue, changes: Sequence[Change]) -> dict[str, str]:
    on, off = _titles(catalogue, changes, True), _titles(catalogue, changes, False)
    return {k: v for k, v in (("on", on), ("off", off)) if v}
