"""Benchmark of account-recovery abuse: many "forgot password" requests take over nothing
and send no more emails than the throttle allows (R6, S2).

Run as `.venv/bin/python bench/recovery_abuse.py [--quick] [--store sqlite|postgresql]
[--seed 1]`. It makes a fresh TUTELA_HOME (on PostgreSQL two throw-away databases on
127.0.0.1, dropped at the end), runs the migrations, and creates R real accounts (200;
quick 50), half with a confirmed TOTP factor. Then, in this process and through the
service the API calls (`Recovery.admit`, then `send_link`, as `POST /api/v1/auth/recovery`
does), an attacker sends N requests (10,000; quick 2,000) from 500 sources (quick 100),
for the real addresses and as many unknown ones, spread evenly over one simulated hour
on a fake clock. The attacker cannot read the victims' mail: it then tries 200
completions with made-up link tokens; a takeover is a password changed that way. (What
someone holding a victim's mailbox can do, the delayed path, is covered by
tests/functional/test_recovery_api.py.)

Figures: requests answered 202 and 429; emails queued; the most emails one account got;
the cap the throttle allows per account (one per TUTELA_RECOVERY_EMAIL_MINUTES over the
hour); takeovers. Goals (from the issue): no takeover; no account above its cap. The
last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pyotp
from sqlalchemy import func, select

from tutela.container import build
from tutela.core.clock import FakeClock
from tutela.core.errors import TooManyAttempts, TutelaError
from tutela.db import migrate
from tutela.households import service as households
from tutela.households.models import AccountRole
from tutela.households.service import AdultSpec, HomeSpec
from tutela.identity import factors
from tutela.identity.logins import Client
from tutela.identity.owners import Owner
from tutela.identity.recovery_models import AccountRecovery
from tutela.settings import Settings

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/"
PASSWORD = "correct horse battery staple"  # noqa: S105 (the bench accounts' password)
NEW_PASSWORD = "walnut orbit candle meadow"  # noqa: S105
HOUR = timedelta(hours=1)


def _stores(kind: str, home: Path) -> tuple[str, str, list[str]]:
    if kind == "sqlite":
        return f"sqlite:///{home / 'tutela.db'}", f"sqlite:///{home / 'keys.db'}", []
    tag = f"tutela_bench_recovery_{uuid.uuid4().hex[:8]}"
    names = [tag, tag + "_keys"]
    with psycopg.connect(PG_SERVER + "postgres", autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    return PG_SERVER + names[0], PG_SERVER + names[1], names


def _drop(names: list[str]) -> None:
    if names:
        with psycopg.connect(PG_SERVER + "postgres", autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(*, store: str, quick: bool, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    accounts = 50 if quick else 200
    requests = 2_000 if quick else 10_000
    sources = 100 if quick else 500
    home = Path(tempfile.mkdtemp(prefix="tutela-bench-recovery-"))
    main_url, keys_url, databases = _stores(store, home)
    try:
        migrate.upgrade(main_url, keys_url)
        settings = Settings(
            environment="test", home=home, database_url=main_url, keystore_url=keys_url
        )
        clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
        container = build(settings, clock=clock)
        hashed = container.hasher.hash(PASSWORD)
        emails: list[str] = []
        for n in range(accounts):
            email = f"victim{n}.{seed}@example.org"
            with container.stores.session() as session:
                created = households.create_home(
                    session,
                    container.vault.keys,
                    spec=HomeSpec(
                        adults=(AdultSpec(f"Victim {n}", email, hashed, AccountRole.OWNER),)
                    ),
                    now=clock.now(),
                )
                if n % 2:
                    account_id = created.accounts[email]
                    profile_id = created.adult_profiles[email]
                    owner = Owner.account(created.household_id, account_id, profile_id)
                    enrolment = factors.begin_totp(
                        session,
                        container.vault.keys,
                        owner,
                        label="Phone",
                        account_name=email,
                        now=clock.now(),
                    )
                    code = pyotp.TOTP(enrolment.secret).at(clock.now())
                    factors.confirm_totp(
                        session,
                        container.vault.keys,
                        owner,
                        enrolment.factor_id,
                        code,
                        now=clock.now(),
                    )
                    session.commit()
            emails.append(email)
        addresses = emails + [f"nobody{n}.{seed}@example.org" for n in range(accounts)]
        pool = [f"10.{(i >> 8) & 255}.{i & 255}.{rng.randrange(1, 255)}" for i in range(sources)]
        start = clock.now()
        answered: Counter[int] = Counter()
        began = time.perf_counter()
        for n in range(requests):
            clock.set(start + HOUR * n / requests)
            client = Client(address=rng.choice(pool))
            email = rng.choice(addresses)
            with container.stores.session() as session:
                try:
                    container.recovery.admit(session, email=email, client=client, now=clock.now())
                except TooManyAttempts:
                    answered[429] += 1
                    continue
                answered[202] += 1
                container.recovery.send_link(session, email=email, client=client, now=clock.now())
        elapsed = time.perf_counter() - began
        with container.stores.session() as session:
            per_account = Counter(
                row.account_id for row in session.scalars(select(AccountRecovery))
            )
            sent = session.scalar(select(func.count()).select_from(AccountRecovery)) or 0
        window = settings.recovery_email_minutes
        # Requests span [0, 1 h): sends at 0, w, 2w, ... < 60 min at most.
        cap = math.ceil(60 / window)
        takeovers = 0
        with container.stores.session() as session:
            for n in range(200):
                try:
                    container.recovery.complete(
                        session,
                        token=f"tsr_{uuid.uuid4().hex}{n}",
                        new_password=NEW_PASSWORD,
                        code=None,
                        recovery_code=None,
                        webauthn=None,
                        client=Client(address=rng.choice(pool)),
                        now=clock.now(),
                    )
                    takeovers += 1
                except TutelaError:
                    session.rollback()
        result: dict[str, object] = {
            "benchmark": "recovery_abuse",
            "store": store,
            "quick": quick,
            "seed": seed,
            "accounts": accounts,
            "requests": requests,
            "sources": sources,
            "answered_202": answered[202],
            "answered_429": answered[429],
            "emails_queued": sent,
            "max_emails_one_account": max(per_account.values(), default=0),
            "cap_per_account": cap,
            "takeovers_without_mailbox": takeovers,
            "seconds": round(elapsed, 1),
        }
        result["verdict"] = (
            "pass"
            if takeovers == 0 and result["max_emails_one_account"] <= cap  # type: ignore[operator]
            else "fail"
        )
        container.close()
        return result
    finally:
        _drop(databases)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = run(store=args.store, quick=args.quick, seed=args.seed)
    print(
        f"{result['requests']} requests: {result['answered_202']} answered 202, "
        f"{result['answered_429']} 429; {result['emails_queued']} emails, at most "
        f"{result['max_emails_one_account']} to one account (cap {result['cap_per_account']}); "
        f"takeovers {result['takeovers_without_mailbox']}: {result['verdict']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
