"""An employee at the customers' sign-in: told to use the staff sign-in, once the password
is right (R4, S2, S4).

Employees and customers sign in through different doors (`/staff/login`, `/login`), each
with its own throttle key. An employee who types their work email at the customers' door
used to hear "The email or password is not right." and nothing more. Now, once their
password is verified, they hear where to go instead; until then the answer, and the work
behind it, are what an unknown email gets:

- the same work either way: the employee's row and throttle state are looked up for every
  email, a customer's too, and one argon2id verification is made (the employee's
  hash instead of the dummy one);
- a wrong password counts on the employee's own throttle key, so guesses through either
  door add up to S2's 100 consecutive failures;
- an employee whose password may no longer be checked from an unknown device (S2), who is
  disabled, or whose initial password expired gets the generic answer, right or wrong.

No session is opened here and nothing about the account is revealed before the password.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from tutela.core.errors import InvalidCredentials, NotAuthenticated
from tutela.identity import password_rules
from tutela.identity.admission import Caller
from tutela.identity.logins import Guess
from tutela.identity.throttle import Attempt

if TYPE_CHECKING:
    from tutela.identity.signin import Gate

STAFF_SIGN_IN_PATH = "/staff/login"


class UseStaffSignIn(NotAuthenticated):
    """The right password of an employee, given at the customers' sign-in."""

    code = "staff_sign_in_required"
    title = "Employees sign in elsewhere"


def refuse_employee(
    gate: Gate,
    session: Session,
    *,
    email: str,
    password: str,
    source: str,
    customer: bool,
    now: datetime,
) -> None:
    """Return when `email` is a customer's or no employee's; otherwise raise:
    `UseStaffSignIn` when the password is right, the usual `InvalidCredentials` when not.

    Asked for every email at the customers' door, a customer's too: the same query and
    the same throttle read whatever the email is, so neither an employee's email nor an
    unknown one shows in the time an answer takes (S4)."""
    login = gate._login(session, email, staff=True, now=now)
    attempt = Attempt(
        account=gate._account_key(email, staff=True, now=now), source=source, known_device=False
    )
    # Asked for every email, a customer's too: the time an answer takes must tell neither
    # an employee's email nor an unknown one.
    verdict = gate.throttle.check(attempt, now.timestamp())
    guess = Guess(throttle=gate.throttle, attempt=attempt, now=now.timestamp(), verdict=verdict)
    if login is None or customer:
        return
    checkable = verdict.allowed and not verdict.password_locked
    with gate.admission.slot(Caller.NEW_DEVICE):
        ok = gate.hasher.verify(
            login.password_hash if checkable else None, password_rules.normalise(password)
        )
    if ok and checkable and not gate._staff_refused(session, login, now):
        raise UseStaffSignIn(
            f"This is an employee account: sign in at {STAFF_SIGN_IN_PATH}.",
            staff_sign_in=STAFF_SIGN_IN_PATH,
        )
    wrong = InvalidCredentials("The email or password is not right.")
    wrong.notices_queued = gate._failure(
        session, guess, login=login, breached=False, now=now, count=checkable
    )
    raise wrong
