"""The demo's employees: a support employee and a privacy officer, with the published
demo password, who enrol their own second factor at the first sign-in (R4).

They show the staff console at http://localhost:8000/staff/login: the support employee
adds an authenticator app from its QR code; the privacy officer, whose role reaches
customer content, must add a passkey or security key (WebAuthn works at localhost, not
at an IP address). Demo only: real employees come from `tutela staff add`, whose one-time
password must be replaced.
"""

from __future__ import annotations

from typing import Final

from tutela.container import Container
from tutela.demo import DEMO_DOMAIN, DEMO_PASSWORD
from tutela.identity import factors
from tutela.identity.owners import Owner
from tutela.identity.staff import StaffRole, add_staff, find_staff

DEMO_SUPPORT_EMAIL: Final = f"support@{DEMO_DOMAIN}"
DEMO_PRIVACY_OFFICER_EMAIL: Final = f"privacy@{DEMO_DOMAIN}"
DEMO_STAFF: Final = (
    (DEMO_SUPPORT_EMAIL, StaffRole.SUPPORT),
    (DEMO_PRIVACY_OFFICER_EMAIL, StaffRole.PRIVACY_OFFICER),
)


def ensure_demo_staff(container: Container) -> None:
    """Add the demo employees if they are missing, with the published demo password.

    An employee who never enrolled a factor is refused once their password is older than
    the enrolment window (72 h, R4); for the demo's employees, each run of `tutela demo`
    opens that window again, so a demo left for a week still lets them enrol.
    """
    now = container.clock.now()
    keys = container.vault.keys
    with container.stores.session() as session:
        for email, role in DEMO_STAFF:
            member = find_staff(session, keys, email=email, now=now)
            if member is None:
                add_staff(session, keys, container.hasher, email=email, roles=[role], now=now)
                member = find_staff(session, keys, email=email, now=now)
                assert member is not None
                member.password_hash = container.hasher.hash(DEMO_PASSWORD)
                member.password_must_change = False
            if not factors.has_second_factor(session, Owner.staff(member.id)):
                member.password_updated_at = now
        session.commit()
