"""Sign-up: a household and its owner's account (S1, R7), without revealing who has one."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from tutela.households import service as households
from tutela.identity import password_rules
from tutela.identity.admission import Caller
from tutela.identity.logins import Client, GateCore, too_many
from tutela.identity.models import SessionKind
from tutela.identity.owners import Owner
from tutela.identity.throttle import Attempt
from tutela.notices.service import NoticeKind, enqueue

log = logging.getLogger("tutela.identity")


class SignUp(GateCore):
    """Opening a household."""

    def sign_up(
        self,
        session: Session,
        *,
        name: str,
        email: str,
        password: str,
        client: Client,
        now: datetime,
    ) -> None:
        """Open a household with its owner's account (S1, R7), whose mailbox is proven by
        an emailed link before its first session (R6).

        The new password is checked in full (length, breached and common passwords, the
        service's name, the email) and refused with the reason. An address that already
        has an account gets the same answer, the same hashing work, and a notice instead:
        sign-up does not reveal who has an account (OWASP).
        """
        from tutela.households.models import AccountRole  # noqa: PLC0415
        from tutela.households.rules import check_email  # noqa: PLC0415

        address = check_email(email)
        normalised = password_rules.check_new_password(
            password, email=address, breaches=self.breaches.within(session)
        )
        attempt = Attempt(
            account=self._account_key(address, staff=False, now=now), source=client.address
        )
        verdict = self.throttle.check(attempt, now.timestamp())
        if not verdict.allowed:
            raise too_many(verdict.retry_after, "attempts")
        # A new device by definition: the defended-mode budget and an ordinary slot (R6).
        self._spend_new_device_hash(defended=verdict.defended, now=now)
        with self.admission.slot(Caller.NEW_DEVICE):
            password_hash = self.hasher.hash(normalised)
        existing = households.find_account(session, self.keys, email=address, now=now)
        if existing is not None:
            enqueue(
                session,
                self.keys,
                kind=NoticeKind.SIGN_UP_EXISTING,
                owner=Owner.account(existing.household_id, existing.id, existing.profile_id),
                params={"at": now.isoformat(), "address": client.address},
                now=now,
            )
            session.commit()
            return
        created = households.create_home(
            session,
            self.keys,
            spec=households.HomeSpec(
                adults=(
                    households.AdultSpec(
                        name=name,
                        email=address,
                        password_hash=password_hash,
                        role=AccountRole.OWNER,
                    ),
                )
            ),
            now=now,
        )
        # The mailbox is proven before the first session: the account opens with no known
        # device and no session, and the emailed link is the only way to its first one
        # (a sign-in with the password from any device is answered with a new link, R6).
        # Sent after the household is committed: should it fail, that sign-in sends one.
        login = self.login_of(
            session,
            Owner.account(
                created.household_id, created.accounts[address], created.adult_profiles[address]
            ),
        )
        self._send_link(
            session,
            login,
            kind=SessionKind.API,
            breached=False,
            now=now,
            client=client,
            notice=NoticeKind.SIGN_UP_CONFIRM,
        )
        session.commit()
