"""The consent page's step-up: asked for when a choice turns on a purpose that is off by
default (review, training, sharing), with the choices kept until it is answered (C7)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from tutela.consent.ledger import ConsentLedger
from tutela.identity import factors
from tutela.identity.service import Principal


@dataclass(frozen=True)
class StepUpAsk:
    """Where and with what the page asks to confirm it is you: an authenticator or
    recovery code, a passkey on the security page, or the password without a factor."""

    form: str
    """The id of the form whose choices wait for it."""
    titles: str
    """The purposes being turned on, in words."""
    code_factor: bool
    has_factor: bool


def ask(
    session: Session, ledger: ConsentLedger, principal: Principal, pending: dict[str, bool]
) -> StepUpAsk:
    """The step-up field for the form that posted `pending` (a separate purpose has its
    own form, C4)."""
    separate = [n for n in pending if n in ledger.catalogue and ledger.catalogue[n].separate]
    owned = factors.list_factors(session, principal.owner)
    return StepUpAsk(
        form=f"consent-form-{separate[0]}" if separate else "consent-form",
        titles=", ".join(
            ledger.catalogue[n].title for n, on in pending.items() if on and n in ledger.catalogue
        ),
        code_factor=any(f.kind != "webauthn" for f in owned)
        or factors.recovery_codes_left(session, principal.owner) > 0,
        has_factor=bool(owned),
    )
