"""What a console deletion form asks for, checked before anything is changed (C6, C7):
a selection, some kinds, a time range, a whole profile or the household, parsed from the
form, turned into an erasure scope, refused as the erasure API refuses it, and counted by
category for the review page; also the categories panel of a profile's page."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

from tutela.core.errors import InvalidInput, NotFound
from tutela.deps import AppContainer, DbSession
from tutela.erasure.api import MAX_SELECTION, _customer_requester
from tutela.erasure.models import ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.households import service as households
from tutela.households.models import AccountRole, ProfileKind
from tutela.households.service import ProfileView
from tutela.identity.service import Principal
from tutela.vault.models import ItemKind
from tutela.vault.summary import Category, categories

WHATS: Final = ("selection", "kinds", "range", "profile", "household")
"""What a console form may ask to delete."""
CHOSEN_KINDS: Final = (ItemKind.VOICE, ItemKind.VIDEO, ItemKind.SNAPSHOT, ItemKind.LOCATION)
"""Kinds a person chooses; transcripts and thumbnails go with their recording or clip."""
_WITH: Final = {ItemKind.VOICE.value: ItemKind.TRANSCRIPT, ItemKind.VIDEO.value: ItemKind.THUMBNAIL}


@dataclass(frozen=True)
class RightsPanel:
    """What a profile's page shows of its data and offers to delete."""

    profile_id: uuid.UUID
    child: bool
    own: bool
    owner: bool
    """The household's owner on their own page: closing the account is offered there."""
    categories: list[Category]
    kinds: tuple[str, ...] = tuple(k.value for k in CHOSEN_KINDS)

    @property
    def total(self) -> int:
        return sum(c.count for c in self.categories)

    @property
    def oldest(self) -> datetime | None:
        found = [c.oldest_captured_at for c in self.categories if c.oldest_captured_at]
        return min(found) if found else None


def panel(session: DbSession, principal: Principal, profile: ProfileView) -> RightsPanel:
    """The categories table and the deletion forms of a visible profile's page."""
    held = categories(session, household_id=principal.household_id, profile_ids={profile.id})
    own = profile.id == principal.profile_id
    return RightsPanel(
        profile_id=profile.id,
        child=profile.kind == ProfileKind.CHILD,
        own=own,
        owner=own and principal.role == AccountRole.OWNER,
        categories=held[profile.id],
    )


@dataclass(frozen=True)
class Asked:
    """A deletion as a console form asks for it, before it is a scope."""

    what: str
    item_ids: tuple[uuid.UUID, ...] = ()
    kinds: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None
    """The last day of the range, included."""

    def scope(self, principal: Principal, profile_id: uuid.UUID, child: bool) -> Scope:
        hh = principal.household_id
        if self.what == "household":
            return Scope(ScopeKind.HOUSEHOLD, hh)
        if self.what == "profile":
            if child:
                return Scope(ScopeKind.PROFILE, hh, profile_id=profile_id)
            # An adult's own profile signs in to their account: all of its items go instead.
            return Scope(ScopeKind.ITEMS, hh, profile_id=profile_id)
        if self.what == "selection":
            return Scope(ScopeKind.ITEMS, hh, profile_id=profile_id, item_ids=self.item_ids)
        if self.what == "kinds":
            return Scope(ScopeKind.ITEMS, hh, profile_id=profile_id, kinds=self.kinds)
        return Scope(
            ScopeKind.ITEMS,
            hh,
            profile_id=profile_id,
            since=_midnight(self.since),
            until=_midnight(self.until + timedelta(days=1)) if self.until else None,
        )

    def fields(self) -> list[tuple[str, str]]:
        """The form fields that ask for this again (the confirmation page's hidden ones)."""
        out = [("what", self.what)]
        out += [("item_id", str(i)) for i in self.item_ids]
        out += [("kind", k) for k in self.kinds]
        if self.since:
            out.append(("since", self.since.isoformat()))
        if self.until:
            out.append(("until", self.until.isoformat()))
        return out


def _midnight(day: date | None) -> datetime | None:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None


def _day(text: str, label: str) -> date | None:
    if not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"The {label} date is not a date.", code="invalid_range") from None


def asked_of(what: str, item_id: list[str], kind: list[str], since: str, until: str) -> Asked:
    if what not in WHATS:
        raise InvalidInput("Unknown kind of deletion.", code="invalid_scope")
    if what == "selection":
        if not item_id:
            raise InvalidInput("Choose at least one item to delete.", code="nothing_chosen")
        if len(item_id) > MAX_SELECTION:
            raise InvalidInput(
                f"Choose at most {MAX_SELECTION} items at a time.", code="selection_too_large"
            )
        try:
            ids = tuple(dict.fromkeys(uuid.UUID(i) for i in item_id))
        except ValueError:
            raise NotFound("No such profile or item.", code="not_found") from None
        return Asked(what, item_ids=ids)
    if what == "kinds":
        chosen = tuple(dict.fromkeys(k for k in kind))
        if not chosen:
            raise InvalidInput("Choose at least one kind of data.", code="nothing_chosen")
        if not set(chosen) <= {k.value for k in CHOSEN_KINDS}:
            raise InvalidInput("Unknown kind of data.", code="invalid_scope")
        return Asked(what, kinds=chosen)
    if what == "range":
        start, end = _day(since, "first"), _day(until, "last")
        if start is None and end is None:
            raise InvalidInput("Give the first day, the last day, or both.", code="nothing_chosen")
        if start and end and end < start:
            raise InvalidInput("The last day is before the first.", code="invalid_range")
        return Asked(what, since=start, until=end)
    return Asked(what)


@dataclass(frozen=True)
class Checked:
    """A deletion this account may ask for: its scope, requester and what it takes."""

    asked: Asked
    scope: Scope
    requester: Requester
    profile: ProfileView
    rows: list[Category]
    """What goes, by category (the whole profile's, a range's, the kinds'); empty for a
    selection (its count is the selection's) and for the household."""


def check(
    session: DbSession,
    container: AppContainer,
    principal: Principal,
    profile_id: uuid.UUID,
    asked: Asked,
) -> Checked:
    visible = households.visible_profile_ids(
        session,
        household_id=principal.household_id,
        account_id=principal.account_id,
        own_profile_id=principal.profile_id,
    )
    if profile_id not in visible:
        raise NotFound("No such profile or item.", code="not_found")
    (profile,) = households.list_profiles(
        session, container.vault.keys, household_id=principal.household_id, profile_ids={profile_id}
    )
    scope = asked.scope(principal, profile_id, profile.kind == ProfileKind.CHILD)
    requester = _customer_requester(session, principal, scope, visible)
    rows: list[Category] = []
    if asked.what in ("kinds", "range", "profile"):
        held = categories(
            session,
            household_id=principal.household_id,
            profile_ids={profile_id},
            since=scope.since,
            until=scope.until,
        )[profile_id]
        wanted = set(asked.kinds) | {_WITH[k].value for k in asked.kinds if k in _WITH}
        rows = [c for c in held if not wanted or c.kind.value in wanted]
    return Checked(asked, scope, requester, profile, rows)
