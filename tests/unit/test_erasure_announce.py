"""Who in the home is told of an erasure and sees it listed (C6, S7): a pure rule."""

from __future__ import annotations

import pytest

from tutela.erasure.announce import asked_by_kind, shown_to_household, tells_household
from tutela.erasure.models import RequesterKind, ScopeKind

P, H, ONE, S = ScopeKind.PROFILE, ScopeKind.HOUSEHOLD, ScopeKind.ITEM, ScopeKind.ITEMS


@pytest.mark.parametrize(
    ("scope", "requester", "shown", "told"),
    [
        (P, RequesterKind.GUARDIAN, True, True),  # a guardian erases a child's profile
        (P, RequesterKind.INACTIVE_CHILD, True, True),  # the rule erases it
        (H, RequesterKind.ACCOUNT_CLOSURE, True, True),  # the owner closes the home
        (H, RequesterKind.PRIVACY_OFFICER, True, True),
        (S, RequesterKind.PRIVACY_OFFICER, True, True),  # any scope by the office
        (ONE, RequesterKind.PRIVACY_OFFICER, True, True),
        (P, RequesterKind.RESTORE_CHECK, True, False),  # listed, nobody told twice
        (H, RequesterKind.RESTORE_CHECK, True, False),
        (S, RequesterKind.ADULT, False, False),  # an adult's own items stay theirs
        (ONE, RequesterKind.ADULT, False, False),
        (ONE, RequesterKind.GUARDIAN, False, False),  # as today: the requester's alone
        (S, RequesterKind.RETENTION, False, False),
        (S, RequesterKind.AUTO_DELETE, False, False),
        (S, RequesterKind.RESTORE_CHECK, False, False),
    ],
)
def test_the_home_is_told_of_a_childs_profile_the_household_and_the_privacy_office(
    scope: ScopeKind, requester: RequesterKind, shown: bool, told: bool
) -> None:
    assert shown_to_household(scope.value, requester.value) is shown
    assert tells_household(scope.value, requester.value) is told


def test_who_asked_names_the_office_and_the_rules_never_an_account() -> None:
    assert asked_by_kind("privacy_officer") == "Tutela's privacy office"
    assert asked_by_kind("retention") == "a retention rule"
    assert "retention rule" in asked_by_kind("inactive_child")
    for kind in ("adult", "guardian", "account_closure"):
        assert asked_by_kind(kind) == "an adult of your home"
