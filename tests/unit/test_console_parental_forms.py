"""What the console's parental-consent page makes of a refusal and of the installation
(C3, C7): a parent's words, the field a message belongs to, the methods offered."""

from __future__ import annotations

from tutela.core.errors import Forbidden, InvalidInput, StepUpRequired, TooManyAttempts
from tutela.settings import Settings
from tutela.web.parental_forms import available_methods, problem_of


def test_a_failed_check_says_why_on_its_field_with_the_attempts_left() -> None:
    failed = Forbidden(
        "The parent could not be verified that way.",
        code="parental_consent_not_verified",
        reason="declined",
        attempts_left=2,
    )
    problem = problem_of("card_check", failed, file_sent=False)
    assert problem.message == "The card was declined. Attempts left today: 2."
    assert problem.on("card_check", "card_token") and not problem.on("id_check", "card_token")
    assert problem.status == 403
    last = Forbidden("x", code="parental_consent_not_verified", reason="not_an_adult")
    assert problem_of("id_check", last, file_sent=True).message == (
        "The ID does not show an adult. No attempts are left today: try again tomorrow."
    )


def test_refusals_before_any_check_say_nothing_was_recorded() -> None:
    bundled = InvalidInput("Sharing is asked on its own.", code="consent_bundled")
    problem = problem_of("signed_form", bundled, file_sent=True)
    assert problem.message.endswith("Nothing was recorded; choose the file again.")
    assert problem.fields == ("purposes",) and problem.status == 422
    step_up = problem_of("card_check", StepUpRequired("x"), file_sent=False)
    assert step_up.fields == ("step_up",)
    assert step_up.message == "Confirm it is you first, below. Nothing was recorded."
    slow = TooManyAttempts("Too many.", code="parental_consent_attempts", retry_after=60)
    assert problem_of("card_check", slow, file_sent=False).status == 429


def test_production_offers_only_what_it_can_really_check() -> None:
    """Only test providers ship: in production they verify nobody, so they are not offered."""
    production = Settings(environment="test").model_copy(update={"environment": "production"})
    assert available_methods(production) == {
        "signed_form": True,
        "card_check": False,
        "knowledge_questions": False,
        "id_check": False,
    }
    assert all(available_methods(Settings(environment="test")).values())
