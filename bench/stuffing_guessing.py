"""Known-device second-factor guessing: 24 simulated hours against the in-process sign-in.

The attacker has the victim's password and the victim's known-device token (a stolen
cookie), and guesses TOTP codes as fast as the sign-in allows (R5, S2): a new password
step whenever its challenge is closed, a random six-digit code per try, a fresh address
from a botnet's pool per challenge. Time is the project's fake clock: each answer takes
`GUESS_INTERVAL_S` (the 88 guesses a second measured in the issue); a refusal is obeyed
(its Retry-After, at least `REFUSED_WAIT_S`) and the attacker tries again. The library's
own Gate runs on the bench's store with an in-memory throttle (Redis would age its keys
by the wall clock, not the fake one).

A victim "falls" when any answer gives the attacker a session. The run stops at 24
simulated hours, or when `cap` guesses were checked (the throttle did not stop them
within the budget of this run: the day's count is then projected from the pace so far).
"""

from __future__ import annotations

import base64
import collections
import logging
import random
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp

from stuffing_common import Person
from stuffing_setup import add_people, public_addresses, settings_of

GUESS_INTERVAL_S = 1 / 88
REFUSED_WAIT_S = 30.0
SIMULATED = timedelta(hours=24)
# Codes a TOTP check accepts at one moment (RFC 6238, one step either side).
ACCEPTED_CODES = 3


def factor_guessing(env: dict[str, str], *, victims: int, cap: int, seed: int) -> dict[str, Any]:
    """Guess against `victims` fresh accounts with TOTP; what was checked, refused, fell."""
    from tutela.container import build
    from tutela.core.clock import FakeClock

    # The library's warnings (defended mode) would reach stderr through logging's last
    # resort; the figures say what happened.
    logging.getLogger("tutela").addHandler(logging.NullHandler())
    rng = random.Random(seed * 7919 + 11)
    people = [
        Person(
            email=f"guessed{n}.{rng.randrange(10**6):06d}@home.bench.test",
            password=f"bench-{secrets.token_urlsafe(12)}",
            totp=base64.b32encode(secrets.token_bytes(20)).decode(),
            role="guessed",
            address=address,
        )
        for n, address in enumerate(public_addresses(rng, victims, set()))
    ]
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    settings = settings_of(
        env, redis_url=None, mfa_required_for_camera_viewers=False, embedded_worker=False
    )
    container = build(settings, clock=clock)
    started = time.perf_counter()
    try:
        add_people(container, people, now=clock.now())
        pool = public_addresses(rng, 500, {p.address for p in people})
        accounts = [guess_one(container, clock, person, rng, pool, cap=cap) for person in people]
    finally:
        container.close()
    checked = [a["checked"] for a in accounts]
    fell = sum(a["fell"] for a in accounts)
    completed = all(a["simulated_h"] >= SIMULATED.total_seconds() / 3600 for a in accounts)
    return {
        "status": "measured",
        "victims": victims,
        "cap": cap,
        "accounts_fallen": fell,
        "simulated_day_completed": completed,
        "guesses_checked": sum(checked),
        "guesses_checked_max": max(checked, default=0),
        "first_refusal_at_checked": [a["first_refusal_at_checked"] for a in accounts],
        "projected_checked_per_day_max": max(a["projected_per_day"] for a in accounts),
        "fall_probability_per_day_max": max(a["fall_probability_per_day"] for a in accounts),
        "accounts": accounts,
        "elapsed_s": time.perf_counter() - started,
    }


def guess_one(
    container: Any, clock: Any, victim: Person, rng: random.Random, pool: list[str], *, cap: int
) -> dict[str, Any]:
    """The victim signs in once from its device; then the attacker guesses with its token."""
    from tutela.core.errors import InvalidCredentials, NotAuthenticated, TooManyAttempts
    from tutela.identity.models import SessionKind
    from tutela.identity.signin import Client

    assert victim.totp is not None
    gate = container.gate
    totp = pyotp.TOTP(victim.totp)
    device = own_device(container, clock, victim, totp)
    clock.advance(timedelta(seconds=90))  # the victim's code is spent; the attack begins
    begin = clock.now()
    checked, ops, fell = 0, 0, False
    first_refusal: int | None = None
    seen: collections.Counter[str] = collections.Counter()
    challenge: str | None = None
    address = rng.choice(pool)
    while clock.now() - begin < SIMULATED and checked < cap and not fell:
        ops += 1
        wait = 0.0
        client = Client(address=address, user_agent="Mozilla/5.0", device_token=device)
        try:
            with container.stores.session() as session:
                if challenge is None:
                    outcome = gate.sign_in(
                        session,
                        email=victim.email,
                        password=victim.password,
                        kind=SessionKind.API,
                        client=client,
                        now=clock.now(),
                    )
                    seen[f"password:{outcome.status}"] += 1
                    fell = outcome.issued is not None
                    challenge = outcome.challenge
                    if challenge is None and not fell:
                        wait = REFUSED_WAIT_S  # e.g. a link to the victim's mailbox
                else:
                    outcome = gate.complete_factor(
                        session,
                        challenge=challenge,
                        code=f"{rng.randrange(10**6):06d}",
                        recovery_code=None,
                        webauthn=None,
                        client=client,
                        now=clock.now(),
                    )
                    checked += 1
                    seen["factor:signed_in"] += 1
                    fell = outcome.issued is not None
        except InvalidCredentials as wrong:
            seen[f"{'factor' if challenge else 'password'}:{wrong.code}"] += 1
            if challenge is not None:
                checked += 1
            else:
                wait = REFUSED_WAIT_S
        except TooManyAttempts as refused:
            seen[f"{'factor' if challenge else 'password'}:too_many_attempts"] += 1
            first_refusal = checked if first_refusal is None else first_refusal
            wait = max(float(getattr(refused, "retry_after", 0) or 0), REFUSED_WAIT_S)
        except NotAuthenticated as refused:
            step = "factor" if challenge else "password"
            seen[f"{step}:{refused.code}"] += 1
            if challenge is None:  # the password step itself refused: a throttle's stop
                first_refusal = checked if first_refusal is None else first_refusal
                wait = REFUSED_WAIT_S
            challenge, address = None, rng.choice(pool)
        clock.advance(timedelta(seconds=GUESS_INTERVAL_S + wait))
    elapsed = (clock.now() - begin).total_seconds()
    per_day = checked if elapsed >= SIMULATED.total_seconds() else checked * 86_400 / elapsed
    return {
        "fell": fell,
        "checked": checked,
        "operations": ops,
        "simulated_h": round(elapsed / 3600, 3),
        "first_refusal_at_checked": first_refusal,
        "answers": dict(seen),
        "projected_per_day": round(per_day),
        "fall_probability_per_day": 1 - (1 - ACCEPTED_CODES / 1e6) ** per_day,
    }


def own_device(container: Any, clock: Any, victim: Person, totp: pyotp.TOTP) -> str | None:
    """The victim's own sign-in with password and code: the known-device token it keeps."""
    from tutela.identity.models import SessionKind
    from tutela.identity.signin import Client

    client = Client(address=victim.address, user_agent="TutelaApp/3.2 (bench)")
    with container.stores.session() as session:
        started = container.gate.sign_in(
            session,
            email=victim.email,
            password=victim.password,
            kind=SessionKind.API,
            client=client,
            now=clock.now(),
        )
    if started.challenge is None:
        return started.device_token  # type: ignore[no-any-return]
    with container.stores.session() as session:
        done = container.gate.complete_factor(
            session,
            challenge=started.challenge,
            code=totp.at(clock.now()),
            recovery_code=None,
            webauthn=None,
            client=client,
            now=clock.now(),
        )
    return done.device_token  # type: ignore[no-any-return]
