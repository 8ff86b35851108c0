"""Setting up an authenticator app: a QR code, a working otpauth:// link, a typeable key
(R5: second factors people can set up; the same page serves employees, R4)."""

from __future__ import annotations

import html
import re

import pyotp
from fastapi.testclient import TestClient

from tests.factories import PASSWORD
from tests.functional.test_sign_in_api import API, sign_in, signed_in, step_up
from tutela.container import Container
from tutela.households.service import CreatedHome


def test_the_apis_totp_enrolment_carries_a_qr_code_of_its_uri(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = next(iter(home.accounts))
    headers = signed_in(sign_in(client, email))
    step_up(client, headers, password=PASSWORD)  # C7: changing factors
    r = client.post(f"{API}/factors/totp", json={}, headers=headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["qr_svg"].startswith("<svg") and "<path" in body["qr_svg"]
    assert email.split("@")[0] not in body["qr_svg"]  # no account text in the drawing
    parsed = pyotp.parse_uri(body["uri"])
    assert parsed.secret == body["secret"]
    assert body["uri"].endswith("&algorithm=SHA1&digits=6&period=30")
    confirmed = client.post(
        f"{API}/factors/totp/{body['factor_id']}/confirm",
        json={"code": parsed.at(container.clock.now())},
        headers=headers,
    )
    assert confirmed.status_code == 200, confirmed.text


def test_the_security_page_shows_the_qr_code_a_working_link_and_the_grouped_key(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = next(iter(home.accounts))
    headers = signed_in(sign_in(client, email))
    step_up(client, headers, password=PASSWORD)  # C7: changing factors
    client.cookies.set("tutela_session", headers["authorization"].removeprefix("Bearer "))
    page = client.post("/account/totp")
    assert page.status_code == 200
    assert re.search(r'<figure class="qr" id="totp-qr"><svg viewBox="[^"]+" class="qr">', page.text)
    link = re.search(r'id="totp-link" href="([^"]+)"', page.text)
    assert link is not None
    uri = html.unescape(link.group(1))  # the "Or open" link was empty before
    assert uri.startswith("otpauth://totp/Tutela:" + email.replace("@", "%40") + "?")
    key = re.search(r'id="totp-secret" class="key">([^<]+)<', page.text)
    assert key is not None
    groups = key.group(1).split(" ")
    assert len(groups) == 8 and all(len(g) == 4 for g in groups)
    totp = pyotp.parse_uri(uri)
    assert "".join(groups) == totp.secret
    action = re.search(r'action="(/account/totp/[^"]+/confirm)"', page.text)
    assert action is not None
    done = client.post(action.group(1), data={"code": totp.at(container.clock.now())})
    assert "Authenticator app added" in done.text
