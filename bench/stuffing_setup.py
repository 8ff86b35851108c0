"""The benchmark's population (accounts with and without a factor) and the attacker's list."""

from __future__ import annotations

import base64
import ipaddress
import math
import random
import secrets
import string
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from stuffing_common import DISTINCT_PASSWORDS, KNOWN_WRONG_SHARE, VALID_SHARE, Person, Plan


def public_addresses(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    """`count` distinct global unicast IPv4 addresses, nearly all in distinct /24s."""
    found: list[str] = []
    while len(found) < count:
        address = ipaddress.IPv4Address(rng.randrange(1 << 24, 224 << 24))
        text = str(address)
        if address.is_global and text not in taken:
            taken.add(text)
            found.append(text)
    return found


def random_password(rng: random.Random) -> str:
    """A password as leaked lists hold them: a word-ish stem, digits, maybe a symbol."""
    stem = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 9)))
    tail = str(rng.randrange(10, 10_000)) + rng.choice(["", "!", "?", "#", "."])
    return stem.capitalize() + tail


def make_people(rng: random.Random, plan: Plan) -> list[Person]:
    passwords = [f"bench-{secrets.token_urlsafe(9)}-{n}" for n in range(DISTINCT_PASSWORDS)]
    victims = round(plan.attempts * VALID_SHARE)
    people: list[Person] = []
    taken: set[str] = set()
    roles = [("victim", victims), ("legit", plan.legit_users), ("bystander", plan.bystanders)]
    for role, count in roles:
        addresses = public_addresses(rng, count, taken) if role == "legit" else [""] * count
        for n in range(count):
            totp = base64.b32encode(secrets.token_bytes(20)).decode() if n % 2 == 0 else None
            people.append(
                Person(
                    email=f"{role}{n}.{rng.randrange(10**6):06d}@home.bench.test",
                    password=rng.choice(passwords),
                    totp=totp if role != "bystander" else None,
                    role=role,
                    address=addresses[n],
                )
            )
    return people


def make_attack(
    rng: random.Random, plan: Plan, people: list[Person], avoid: set[str]
) -> dict[str, Any]:
    """The breached list in the order it is replayed, and the attacker's address pool."""
    victims = [p for p in people if p.role == "victim"]
    rng.shuffle(victims)
    valid_at = dict(
        zip(sorted(rng.sample(range(plan.attempts), len(victims))), victims, strict=True)
    )
    emails: list[str] = []
    passwords: list[str] = []
    kinds: list[str] = []  # "valid_mfa" | "valid_no_mfa" | "known_wrong" | "unknown"
    wrong_share = KNOWN_WRONG_SHARE / (1 - VALID_SHARE)
    for n in range(plan.attempts):
        victim = valid_at.get(n)
        if victim is not None:
            emails.append(victim.email)
            passwords.append(victim.password)
            kinds.append("valid_mfa" if victim.totp else "valid_no_mfa")
        elif rng.random() < wrong_share:
            emails.append(rng.choice(people).email)
            passwords.append(random_password(rng))
            kinds.append("known_wrong")
        else:
            emails.append(
                f"{rng.choice('abcdefghijklmnopqrstuvwxyz')}{rng.randrange(10**9)}@mail.test"
            )
            passwords.append(random_password(rng))
            kinds.append("unknown")
    sources = public_addresses(rng, plan.sources, set(avoid))
    return {
        "emails": emails,
        "passwords": passwords,
        "kinds": kinds,
        "sources": sources,
        "source_of": [rng.randrange(plan.sources) for _ in range(plan.attempts)],
    }


def create_population(env: dict[str, str], people: list[Person]) -> dict[str, Any]:
    """Migrate both stores, seed the breached store, create the homes and TOTP factors."""
    from tutela.container import build
    from tutela.db import migrate
    from tutela.identity.breached import seed_default

    settings = settings_of(env)
    started = time.perf_counter()
    migrate.upgrade(settings.main_url, settings.keys_url)
    container = build(settings)
    try:
        seeded = seed_default(container.stores.main_sessions)
        add_people(container, people, now=container.clock.now())
    finally:
        container.close()
    return {
        "accounts": len(people),
        "households": math.ceil(len(people) / 2),
        "breached_seeded": seeded,
        "population_s": time.perf_counter() - started,
    }


def settings_of(env: dict[str, str], **changes: Any) -> Any:
    """The library's settings for the bench's stores (TUTELA_* of the environment apply)."""
    from tutela.settings import Settings

    return Settings(
        home=Path(env["TUTELA_HOME"]),
        database_url=env.get("TUTELA_DATABASE_URL"),
        keystore_url=env.get("TUTELA_KEYSTORE_URL"),
        **changes,
    )


def add_people(container: Any, people: list[Person], *, now: datetime) -> None:
    """Homes of two adults each, one argon2id hash per distinct password (as the demo does),
    and a confirmed TOTP factor for each person that has a secret."""
    from tutela.households.models import AccountRole
    from tutela.households.service import AdultSpec, HomeSpec, create_home
    from tutela.identity import factors
    from tutela.identity.models import Factor
    from tutela.identity.owners import Owner

    hashes = {p: container.hasher.hash(p) for p in sorted({p.password for p in people})}
    with container.stores.session() as session:
        for at in range(0, len(people), 2):
            pair = people[at : at + 2]
            spec = HomeSpec(
                adults=tuple(
                    AdultSpec(
                        f"Member {at + n}",
                        p.email,
                        hashes[p.password],
                        AccountRole.OWNER if n == 0 else AccountRole.MEMBER,
                    )
                    for n, p in enumerate(pair)
                )
            )
            home = create_home(session, container.vault.keys, spec=spec, now=now, commit=False)
            for person in pair:
                if person.totp is None:
                    continue
                email = person.email.casefold()
                owner = Owner.account(
                    home.household_id, home.accounts[email], home.adult_profiles[email]
                )
                enrolment = factors.begin_totp(
                    session,
                    container.vault.keys,
                    owner,
                    label="Authenticator app",
                    account_name=person.email,
                    now=now,
                    secret=base64.b32decode(person.totp),
                )
                factor = session.get(Factor, enrolment.factor_id)
                assert factor is not None
                factor.confirmed_at = now
            if at % 100 == 98:
                session.commit()
        session.commit()
