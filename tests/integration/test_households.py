"""Creating homes: a refused home leaves no row and no key behind; devices and guardians."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from tests.factories import make_home, password_hash
from tests.mailbox import emailed_link
from tutela.container import Container
from tutela.core.errors import Conflict, InvalidDeviceToken, InvalidInput
from tutela.households import service
from tutela.households.models import Household, Profile
from tutela.households.service import AdultSpec, ChildSpec, DeviceSpec, HomeSpec
from tutela.vault.models import ProfileKey


def _counts(container: Container) -> tuple[int, int, int]:
    with container.stores.session() as s:
        homes = s.scalar(select(func.count()).select_from(Household)) or 0
        profiles = s.scalar(select(func.count()).select_from(Profile)) or 0
    with container.stores.key_sessions() as k:
        keys = k.scalar(select(func.count()).select_from(ProfileKey)) or 0
    return homes, profiles, keys


@pytest.mark.parametrize(
    ("spec_of", "error", "code"),
    [
        (lambda h, t: HomeSpec(adults=()), Conflict, "household_needs_adult"),
        (
            lambda h, t: HomeSpec(adults=(AdultSpec("A", f"ana.{t}@example.com", h),)),
            Conflict,
            "email_taken",
        ),
        (
            lambda h, t: HomeSpec(
                adults=(AdultSpec("B", f"b.{t}@example.com", h),),
                children=(ChildSpec("C", date(2020, 1, 1), ("stranger@example.com",)),),
            ),
            Conflict,
            "unknown_guardian",
        ),
        (
            lambda h, t: HomeSpec(
                adults=(AdultSpec("B", f"b.{t}@example.com", h),),
                children=(ChildSpec("C", date(1990, 1, 1), (f"b.{t}@example.com",)),),
            ),
            InvalidInput,
            "not_a_child",
        ),
        (
            lambda h, t: HomeSpec(
                adults=(AdultSpec("B", f"b.{t}@example.com", h),),
                devices=(DeviceSpec("camera", "Somewhere"),),
            ),
            InvalidInput,
            "camera_zone_required",
        ),
    ],
)
def test_a_refused_home_writes_nothing(
    container: Container, unique: str, spec_of: object, error: type[Exception], code: str
) -> None:
    make_home(container, tag=unique)
    before = _counts(container)
    spec = spec_of(password_hash(container), unique)  # type: ignore[operator]
    with container.stores.session() as s, pytest.raises(error) as info:
        service.create_home(s, container.vault.keys, spec=spec, now=container.clock.now())
    assert info.value.code == code  # type: ignore[attr-defined]
    assert _counts(container) == before


def test_device_tokens_are_shown_once_and_stored_hashed(container: Container, unique: str) -> None:
    home = make_home(container, tag=unique)
    token = next(iter(home.device_tokens.values()))
    with container.stores.session() as s:
        device = service.authenticate_device(s, token=token, now=container.clock.now())
        assert token.encode() not in device.token_hash
        assert device.token_hash == service.hash_device_token(token)
        service.revoke_device(
            s, household_id=home.household_id, device_id=device.id, now=container.clock.now()
        )
        with pytest.raises(InvalidDeviceToken):
            service.authenticate_device(s, token=token, now=container.clock.now())


def test_a_guardian_sees_the_child_and_a_co_parent_without_guardianship_does_not(
    container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique, second_adult=True)
    ana, bruno = home.accounts
    with container.stores.session() as s:
        ana_sees = service.visible_profile_ids(
            s,
            household_id=home.household_id,
            account_id=home.accounts[ana],
            own_profile_id=home.adult_profiles[ana],
        )
        bruno_sees = service.visible_profile_ids(
            s,
            household_id=home.household_id,
            account_id=home.accounts[bruno],
            own_profile_id=home.adult_profiles[bruno],
        )
        views = service.list_profiles(
            s, container.vault.keys, household_id=home.household_id, profile_ids=ana_sees
        )
    assert ana_sees == {home.adult_profiles[ana], home.child_profiles[0]}
    assert bruno_sees == {home.adult_profiles[bruno]}
    child = next(v for v in views if v.kind == "child")
    assert (child.name, child.birth_date) == ("Lily Marchetti", date(2019, 3, 14))


def test_a_sessions_address_and_user_agent_are_kept_sealed_and_readable_by_tutela(
    container: Container, unique: str
) -> None:
    from tests.factories import PASSWORD
    from tutela.households.models import Account
    from tutela.identity import service as identity
    from tutela.identity.models import SessionKind, SignInSession
    from tutela.identity.owners import Owner
    from tutela.identity.signin import Client

    make_home(container, tag=unique)
    with container.stores.session() as s:
        outcome = container.gate.sign_in(
            s,
            email=f"ana.{unique}@example.com",
            password=PASSWORD,
            kind=SessionKind.API,
            client=Client(address="203.0.113.7", user_agent="Firefox/140 (Linux)"),
            now=container.clock.now(),
        )
        # A device Tutela has not seen: the session comes from the emailed link (R6).
        assert outcome.status == "link_sent"
        container.deliver_notices()
        outcome = container.gate.complete_link(
            s,
            token=emailed_link(container, f"ana.{unique}@example.com"),
            client=Client(address="203.0.113.7", user_agent="Firefox/140 (Linux)"),
            now=container.clock.now(),
        )
        assert outcome.issued is not None
        row = s.get(SignInSession, outcome.issued.session_id)
        assert row is not None
        account = s.get(Account, (row.household_id, row.account_id))
        assert account is not None
        owner = Owner.account(account.household_id, account.id, account.profile_id)
        assert b"203.0.113.7" not in row.client_sealed and b"Firefox" not in row.client_sealed
        assert identity.session_client(container.vault.keys, row, owner, now=row.created_at) == {
            "user_agent": "Firefox/140 (Linux)",
            "address": "203.0.113.7",
        }
