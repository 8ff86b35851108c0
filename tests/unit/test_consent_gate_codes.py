"""What each consent decision means at an ingestion gate: a stable code and a sentence a
device can show, never a name (C3, C6). Pure: no I/O."""

from __future__ import annotations

import pytest

from tutela.consent.ledger import Decision, Reason
from tutela.vault.gates import PURPOSE_OF_KIND, refusal
from tutela.vault.models import ItemKind


@pytest.mark.parametrize("reason", [Reason.GRANTED, Reason.DEFAULT_ON])
def test_an_allowed_decision_refuses_nothing(reason: Reason) -> None:
    assert refusal(Decision(True, reason), purpose="storage", child=False) is None


@pytest.mark.parametrize(
    ("reason", "child", "purpose", "code", "detail"),
    [
        (
            Reason.PARENTAL_CONSENT_REQUIRED,
            True,
            "storage",
            "parental_consent_required",
            "A parent must give verified consent before recordings are kept for this child.",
        ),
        (
            Reason.PARENTAL_CONSENT_REQUIRED,
            True,
            "precise_geolocation",
            "parental_consent_required",
            "A parent must give verified consent before locations are kept for this child.",
        ),
        (
            Reason.WITHDRAWN,
            True,
            "storage",
            "collection_refused",
            "A parent has stopped recordings for this child.",
        ),
        (
            Reason.WITHDRAWN,
            True,
            "precise_geolocation",
            "collection_refused",
            "A parent has stopped location sharing for this child.",
        ),
        (
            Reason.WITHDRAWN,
            False,
            "precise_geolocation",
            "consent_withdrawn",
            "This person has turned off location sharing.",
        ),
        (
            Reason.FRESH_CONSENT_NEEDED,
            True,
            "storage",
            "fresh_consent_needed",
            "The consent notice has changed: a parent must agree to the new one before "
            "recordings are kept again.",
        ),
        (
            Reason.NOT_GRANTED,
            False,
            "storage",
            "consent_not_granted",
            "This person has not agreed to recordings.",
        ),
    ],
)
def test_each_refusal_has_its_code_and_sentence(
    reason: Reason, child: bool, purpose: str, code: str, detail: str
) -> None:
    refused = refusal(Decision(False, reason), purpose=purpose, child=child)
    assert refused is not None
    assert (refused.code, refused.detail) == (code, detail)


def test_every_kind_of_upload_is_behind_a_gate() -> None:
    assert set(PURPOSE_OF_KIND) == set(ItemKind)
    assert PURPOSE_OF_KIND[ItemKind.LOCATION] == "precise_geolocation"
    assert {PURPOSE_OF_KIND[k] for k in ItemKind if k is not ItemKind.LOCATION} == {"storage"}
