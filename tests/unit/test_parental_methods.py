"""The verification methods' pure parts: the fake providers' published behaviour, the
age rule, and the refusal of every fake in production (C3)."""

from __future__ import annotations

from datetime import date

import pytest

from tutela.consent.idcheck import FakeIdChecker, age_on, id_checker
from tutela.consent.payments import FakePaymentProvider, payment_provider
from tutela.consent.questions import BANK, require_bank
from tutela.core.errors import ConfigurationError
from tutela.settings import Settings


def test_the_fake_card_provider_passes_ok_tokens_and_declines_the_rest() -> None:
    fake = FakePaymentProvider()
    ok = fake.verify_card("tok_ok", 0)
    assert ok.ok and ok.last4 == "4242" and ok.reference.startswith("fake_auth_")
    assert fake.verify_card("tok_ok_1881", 0).last4 == "1881"
    declined = fake.verify_card("tok_declined", 0)
    assert not declined.ok and declined.reason == "declined" and declined.last4 == ""
    assert fake.verify_card("4242424242424242", 0).reason == "invalid_token"


def test_the_fake_id_checker_accepts_only_an_adults_declared_birth_date() -> None:
    fake, today = FakeIdChecker(), date(2026, 12, 7)
    assert fake.check_adult(b"\xff\xd8\xffDOB=2008-12-07", "image/jpeg", today=today).ok
    young = fake.check_adult(b"\xff\xd8\xffDOB=2008-12-08", "image/jpeg", today=today)
    assert not young.ok and young.reason == "not_an_adult"
    assert fake.check_adult(b"\xff\xd8\xff", "image/jpeg", today=today).reason == "unreadable"
    assert age_on(date(2000, 2, 29), date(2018, 2, 28)) == 17


def test_every_fake_verifies_nobody_in_production() -> None:
    production = Settings(environment="test").model_copy(update={"environment": "production"})
    with pytest.raises(ConfigurationError) as card:
        payment_provider(production)
    with pytest.raises(ConfigurationError) as ids:
        id_checker(production)
    with pytest.raises(ConfigurationError) as bank:
        require_bank(production=True)
    assert (card.value.code, ids.value.code, bank.value.code) == (
        "payment_provider_missing",
        "id_checker_missing",
        "question_bank_missing",
    )
    assert isinstance(payment_provider(Settings(environment="test")), FakePaymentProvider)


def test_each_question_has_four_choices_one_of_them_its_answer() -> None:
    assert len(BANK) >= 6
    for question in BANK:
        assert len(question.choices) == 4 and question.answer in question.choices
        assert question.answer.casefold() not in question.id.casefold()
