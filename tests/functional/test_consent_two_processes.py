"""A withdrawal in one process is refused by the very next check of another (C6).

Process B is a separate Python process with its own container (and so its own cache of
consent), over the same stores: it checks a purpose allowed, answering from its cache;
process A (this one) withdraws it through the API; B's very next check is refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from fastapi.testclient import TestClient

from tests.factories import PASSWORD
from tests.functional.conftest import owner_email, sign_in
from tutela.households.service import CreatedHome
from tutela.settings import Settings

# argv: household id, profile id. Reads a line per check from stdin and answers
# "allowed" or "refused"; "quit" ends it.
CHECKER = """
import sys, uuid
from datetime import UTC, datetime
from tutela.consent.freshness import PostgresCache
from tutela.consent.ledger import Subject
from tutela.container import build
from tutela.settings import Settings

container = build(Settings())
cache = container.consent.cache
if isinstance(cache, PostgresCache):
    assert cache.wait_trusted(10.0)
subject = Subject(uuid.UUID(sys.argv[1]), uuid.UUID(sys.argv[2]), "adult")
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "quit":
        break
    allowed = container.consent.allows(subject, "human_review", datetime.now(UTC))
    print("allowed" if allowed else "refused", flush=True)
container.close()
"""


def _check(child: subprocess.Popen[str]) -> str:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("check\n")
    child.stdin.flush()
    return child.stdout.readline().strip()


def test_a_withdrawal_is_refused_by_the_next_check_of_another_process(
    client: TestClient, home: CreatedHome, settings: Settings
) -> None:
    auth = sign_in(client, owner_email(home))
    # Turning on human review needs a step-up (C7).
    r = client.post("/api/v1/auth/step-up", json={"password": PASSWORD}, headers=auth)
    assert r.status_code == 204, r.text
    profile = home.adult_profiles[owner_email(home)]
    url = f"/api/v1/profiles/{profile}/consent"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TUTELA_")},
        "TUTELA_ENVIRONMENT": "test",
        "TUTELA_HOME": str(settings.home),
        "TUTELA_DATABASE_URL": settings.main_url,
        "TUTELA_KEYSTORE_URL": settings.keys_url,
        "TUTELA_EMBEDDED_WORKER": "false",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHECKER, str(home.household_id), str(profile)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        assert _check(child) == "refused"  # off by default (C4)
        for _ in range(5):
            r = client.post(
                url, json={"notice_version": 1, "changes": {"human_review": True}}, headers=auth
            )
            assert r.status_code == 200
            # A grant may be seen a moment late; refusing meanwhile is safe.
            deadline = time.monotonic() + 10
            while _check(child) != "allowed":
                assert time.monotonic() < deadline, "the grant was never seen"
                time.sleep(0.001)
            assert _check(child) == "allowed"  # now from its cache
            r = client.post(
                url, json={"notice_version": 1, "changes": {"human_review": False}}, headers=auth
            )
            assert r.status_code == 200
            assert _check(child) == "refused"
        r = client.post(url + "/refuse", headers=auth)
        assert r.status_code == 200
        assert _check(child) == "refused"
    finally:
        assert child.stdin is not None
        child.stdin.write("quit\n")
        child.stdin.flush()
        child.wait(timeout=30)
    assert child.returncode == 0
