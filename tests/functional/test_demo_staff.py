"""The demo's employees sign in on the staff console and enrol their own factor (R4)."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from tests.functional.test_sign_in_api import API, sign_in, signed_in
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.demo import DEMO_PASSWORD
from tutela.demo_staff import DEMO_PRIVACY_OFFICER_EMAIL, DEMO_SUPPORT_EMAIL, ensure_demo_staff


def test_demo_employees_sign_in_with_the_demo_password_to_enrol_a_factor(
    client: TestClient, container: Container, clock: FakeClock
) -> None:
    ensure_demo_staff(container)
    ensure_demo_staff(container)  # a second `tutela demo` adds nobody twice

    support = signed_in(sign_in(client, DEMO_SUPPORT_EMAIL, DEMO_PASSWORD, staff=True), "enrol")
    security = client.get(f"{API}/account/security", headers=support).json()
    assert security["mfa_required"] and not security["webauthn_required"]
    officer = signed_in(
        sign_in(client, DEMO_PRIVACY_OFFICER_EMAIL, DEMO_PASSWORD, staff=True), "enrol"
    )
    assert client.get(f"{API}/account/security", headers=officer).json()["webauthn_required"]

    # Past the 72-hour enrolment window the password alone opens nothing (R4) ...
    clock.advance(timedelta(days=4))
    late = sign_in(client, DEMO_SUPPORT_EMAIL, DEMO_PASSWORD, staff=True)
    assert late.status_code == 401
    # ... until the demo is run again, which opens the window for its employees.
    ensure_demo_staff(container)
    signed_in(sign_in(client, DEMO_SUPPORT_EMAIL, DEMO_PASSWORD, staff=True), "enrol")
    # At the customers' door, the demo employee is pointed to the staff sign-in.
    at_customers = sign_in(client, DEMO_SUPPORT_EMAIL, DEMO_PASSWORD)
    assert at_customers.json()["code"] == "staff_sign_in_required"
