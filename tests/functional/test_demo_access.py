"""`tutela demo` records a few looks by employees at the documented home's media, so its
access log has something to show (R3, R9)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.functional.test_demo import client, demo_home, sign_in, tutela  # noqa: F401
from tutela.demo import DEMO_OWNER_EMAIL, DEMO_SECOND_PARENT_EMAIL


def test_the_demo_parent_sees_employees_looks_in_the_access_log(client: TestClient) -> None:  # noqa: F811
    auth = sign_in(client, DEMO_OWNER_EMAIL)
    r = client.get("/api/v1/access-log", headers=auth)
    assert r.status_code == 200, r.text
    entries = r.json()["accesses"]
    assert {e["purpose"] for e in entries} == {
        "support_ticket",
        "legal_process",
        "safety_review",
        "break_glass",
    }
    assert {e["who"].split(" #")[0] for e in entries} == {
        "Trust & Safety reviewer",
        "Privacy officer",
    }
    assert "demo.tutela.test" not in r.text
    tickets = {e["ticket"] for e in entries}
    assert {"SUP-20431", "TS-1182", "LP-2026-0117"} <= tickets
    # The second parent sees the looks at the children they are a guardian of, and at
    # their own recordings: never the other parent's.
    other = client.get("/api/v1/access-log", headers=sign_in(client, DEMO_SECOND_PARENT_EMAIL))
    assert other.status_code == 200
    owners = {e["profile_id"] for e in entries if e["purpose"] == "legal_process"}
    assert not owners & {e["profile_id"] for e in other.json()["accesses"]}


def test_running_the_demo_again_records_no_more_looks(demo_home: Path) -> None:  # noqa: F811
    from fastapi.testclient import TestClient as Client

    from tutela.app import create_app
    from tutela.settings import Settings

    tutela("demo", "--households", "3", "--seed", "11", "--if-empty")
    with Client(create_app(Settings())) as again:
        entries = again.get("/api/v1/access-log", headers=sign_in(again, DEMO_OWNER_EMAIL)).json()[
            "accesses"
        ]
    assert len(entries) == 4
