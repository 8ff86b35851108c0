"""The payment-card check of verifiable parental consent (C3; 16 CFR 312.5(b)(2)(ii)).

A card used in a monetary transaction shows that an adult who holds a card takes part:
the provider authorises a small amount (or zero) against a token the card form gave the
parent's browser, and refunds or voids it. Tutela never sees the card number; the
evidence it keeps is the provider's reference and the card's last four digits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from tutela.core.errors import ConfigurationError
from tutela.settings import Settings

AUTHORISATION_CENTS = 0
"""A zero-amount authorisation (card verification): nothing is charged."""


@dataclass(frozen=True)
class CardCheck:
    ok: bool
    reference: str
    """The provider's reference of the authorisation (kept as evidence)."""
    last4: str
    """The card's last four digits as the provider reports them ("" when refused)."""
    reason: str = ""
    """Why the provider refused it, in its own short code ("declined", "invalid_token")."""


class PaymentProvider(Protocol):
    """Authorises and voids a small amount against a card token; never sees a card number."""

    name: str

    def verify_card(self, token: str, amount_cents: int) -> CardCheck: ...


class FakePaymentProvider:
    """A deterministic provider for tests and the demo. Tokens:
    `tok_ok` (and `tok_ok_<4 digits>` for other last digits) pass; `tok_declined` is
    declined; anything else is an invalid token."""

    name = "fake"

    def verify_card(self, token: str, amount_cents: int) -> CardCheck:
        reference = "fake_auth_" + hashlib.sha256(token.encode()).hexdigest()[:16]
        if token == "tok_ok":  # noqa: S105 (a published test token, not a secret)
            return CardCheck(True, reference, "4242")
        if token.startswith("tok_ok_") and len(token) == 11 and token[7:].isdigit():
            return CardCheck(True, reference, token[7:])
        if token == "tok_declined":  # noqa: S105
            return CardCheck(False, reference, "", "declined")
        return CardCheck(False, "", "", "invalid_token")


def payment_provider(settings: Settings) -> PaymentProvider:
    """The configured provider. Only the fake ships: in production it is refused when a
    card is to be checked, so a test token never verifies a real parent."""
    if settings.payment_provider == "fake" and settings.environment == "production":
        raise ConfigurationError(
            "No payment provider is configured for card checks.", code="payment_provider_missing"
        )
    return FakePaymentProvider()
