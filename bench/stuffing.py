"""Benchmark of sign-in under a credential-stuffing attack, against the same sign-ins without one.

Run as `.venv/bin/python bench/stuffing.py [--quick] [--store postgresql|sqlite]
[--connections 32] [--seed 1]`. Server settings may be given as TUTELA_* variables in the
environment (they are reported). It makes a fresh TUTELA_HOME (on PostgreSQL two fresh
databases, dropped at the end), runs the migrations, seeds the breached-password store
as `tutela db upgrade` does, and creates the population with the library (two adults per
household; one argon2id hash per distinct password, as the demo does):

* victims: one account per valid pair of the attack list (2% of it), half with a
  confirmed TOTP factor;
* legitimate users (200; quick 60), half with TOTP, each from its own stable address;
* bystanders: real accounts that the list holds only with wrong passwords.

Then it starts `tutela serve --workers 2` with the throttle in Redis (shared by both
workers; db 5 by default, flushed before and after), X-Forwarded-For believed from
127.0.0.1 only (`TUTELA_TRUSTED_PROXIES`), and MFA only where enrolled
(`TUTELA_MFA_REQUIRED_FOR_CAMERA_OWNERS=false`); every other setting is the default.

1. setup: every legitimate user signs in once from its address (with TOTP when enrolled)
   and keeps the known-device token it gets (sent as `X-Tutela-Device` from then on).
2. baseline: legitimate sign-ins only, about 3 a second (Poisson), for 60 s (quick 20 s),
   from one separate process (asyncio + httpx). A user with TOTP signs in at most once per
   30 s step: a code is accepted once.
3. attack: the same legitimate load while a separate attacker process replays the list
   (100,000 pairs from 2,000 addresses in nearly as many /24s; quick 10,000 from 200) over
   32 keep-alive connections, as fast as the answers come, each pair once, from a random
   address of its pool sent as X-Forwarded-For. The attacker has no device token, no TOTP
   secret and no mailbox, and does not retry a refused pair. Of the list, 2% are valid
   pairs, 8% real emails with wrong passwords, the rest unknown emails; the passwords are
   random, none in the breached-password store, so the detector must find the attack by
   its failures alone. The attacker speaks raw HTTP/1.1 (httpx would take several ms of
   the server's two cores per request; a real attacker's client runs elsewhere).
4. burst: with no other load, attempts from addresses still throttled (every answer a
   429, no hash computed): the server's CPU (both workers, psutil) over the burst, per
   attempt. Baseline: the CPU of one argon2id verification with the settings' parameters,
   measured in this process (argon2-cffi, `time.process_time`). For scale, the same
   client's `GET /healthz` is measured too: the HTTP stack's own cost.

A takeover is a 201 with stage "full" for the attacker. A legitimate user is challenged
when a sign-in asks for more than it normally does (for a user with TOTP the code prompt
is normal; for one without, any 202; for everyone, a 429 or an emailed link); locked out
when a sign-in cannot be completed at all within 120 s (by password and factor, known
device, or the emailed link read from `<TUTELA_HOME>/mail`). Latency is the time to the
token of a legitimate sign-in, whatever it took. Goals (from the issue): no takeover of an
account with MFA; at most 0.01% of the valid pairs without MFA; at most 1% of legitimate
users challenged and none locked out; CPU per rejected attempt < 5% of an argon2
verification; legitimate p99 under attack at most 2x the baseline's. The last line
printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import ipaddress
import json
import math
import os
import random
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pyotp
import redis
from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/"
REDIS_URL = "redis://127.0.0.1:6379/5"
DEFENDED_KEY = "tutela:throttle:defended"
SERVER_WORKERS = 2
ATTACK_CONNECTIONS = 32
LEGIT_CONNECTIONS = 16
DISTINCT_PASSWORDS = 8
VALID_SHARE = 0.02
KNOWN_WRONG_SHARE = 0.08
SIGNIN_LIMIT_S = 120.0
LINK_WAIT_S = 20.0
TOTP_STEP_S = 30
ATTACKER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36"
SIGN_IN = "/api/v1/auth/token"

GOAL_TAKEN_OVER_MFA = 0
GOAL_TAKEN_OVER_NO_MFA_RATIO = 0.0001
GOAL_CHALLENGED_RATIO = 0.01
GOAL_LOCKED_OUT = 0
GOAL_CPU_RATIO = 0.05
GOAL_P99_RATIO = 2.0

# What the attacker saw, one small number per attempt.
OUTCOMES = (
    "not_sent",
    "signed_in_full",
    "signed_in_other",
    "second_factor_required",
    "link_sent",
    "invalid_credentials",
    "sign_in_link_required",
    "too_many_attempts",
    "other",
)
CODE = {name: n for n, name in enumerate(OUTCOMES)}
# What makes a legitimate sign-in "challenged": more than its password (and code, if any).
CHALLENGES = {
    "second_factor_without_factor",
    "link_sent",
    "sign_in_link_required",
    "too_many_attempts",
}
# Answers for which the server computed an argon2id hash.
HASHED = {"signed_in_full", "signed_in_other", "second_factor_required", "link_sent"}
HASHED |= {"invalid_credentials"}


@dataclass(frozen=True)
class Plan:
    attempts: int
    sources: int
    bystanders: int
    legit_users: int
    legit_rate: float  # legitimate sign-ins started per second
    baseline_s: float
    burst: int
    attack_limit_s: float


FULL = Plan(
    attempts=100_000,
    sources=2_000,
    bystanders=1_800,
    legit_users=200,
    legit_rate=3.0,
    baseline_s=60.0,
    burst=5_000,
    attack_limit_s=1_800.0,
)
QUICK = Plan(
    attempts=10_000,
    sources=200,
    bystanders=160,
    legit_users=60,
    legit_rate=3.0,
    baseline_s=20.0,
    burst=1_000,
    attack_limit_s=300.0,
)


@dataclass(frozen=True)
class Person:
    """A real account: its email, its password, its TOTP secret (base32) if enrolled."""

    email: str
    password: str
    totp: str | None
    role: str  # "victim" | "legit" | "bystander"
    address: str = ""


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (the uvicorn workers)."""
    total = 0.0
    with suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    return total


def backend_cpu(databases: list[str]) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to one of `databases`, by pid."""
    found: dict[int, float] = {}
    if not databases:
        return found
    for proc in psutil.process_iter(["cmdline"]):
        with suppress(psutil.Error):
            line = " ".join(proc.info["cmdline"] or ())
            if line.startswith("postgres:") and any(f" {db} " in line for db in databases):
                times = proc.cpu_times()
                found[proc.pid] = times.user + times.system
    return found


def backend_cpu_since(before: dict[int, float], databases: list[str]) -> float:
    """CPU seconds the backends used since `before` (a backend gone by now is not counted)."""
    return sum(v - before.get(pid, 0.0) for pid, v in backend_cpu(databases).items())


def machine_busy() -> tuple[float, float]:
    """Busy and all jiffies of the whole machine (/proc/stat)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


# --- the population and the attack list ------------------------------------------------------


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
    from tutela.households.models import AccountRole
    from tutela.households.service import AdultSpec, HomeSpec, create_home
    from tutela.identity import factors
    from tutela.identity.breached import seed_default
    from tutela.identity.models import Factor
    from tutela.identity.owners import Owner
    from tutela.settings import Settings

    settings = Settings(
        home=Path(env["TUTELA_HOME"]),
        database_url=env.get("TUTELA_DATABASE_URL"),
        keystore_url=env.get("TUTELA_KEYSTORE_URL"),
    )
    started = time.perf_counter()
    migrate.upgrade(settings.main_url, settings.keys_url)
    container = build(settings)
    try:
        seeded = seed_default(container.stores.main_sessions)
        hashes = {p: container.hasher.hash(p) for p in sorted({p.password for p in people})}
        now = container.clock.now()
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
    finally:
        container.close()
    return {
        "accounts": len(people),
        "households": math.ceil(len(people) / 2),
        "breached_seeded": seeded,
        "population_s": time.perf_counter() - started,
    }


# --- the attacker: one separate process ------------------------------------------------------


def classify(status: int, body: Any) -> str:
    """What one answer to `POST /api/v1/auth/token` (or its next steps) means."""
    if status == 429:
        return "too_many_attempts"
    if not isinstance(body, dict):
        return "other"
    if status == 201:
        return "signed_in_full" if body.get("stage") == "full" else "signed_in_other"
    if status == 202 and body.get("status") in ("second_factor_required", "link_sent"):
        return str(body["status"])
    if status == 401 and body.get("code") in ("invalid_credentials", "sign_in_link_required"):
        return str(body["code"])
    return "other"


def json_of(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


class RawConnection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON: the attacker's client.

    httpx costs several milliseconds of CPU per request, and the attacker's client runs on
    the server's two cores (a real one would not): this one costs a fraction of that.
    uvicorn answers these requests with a Content-Length, which is all it reads.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(
        self, method: str, path: str, payload: Any, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        body = b"" if payload is None else json.dumps(payload).encode()
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        try:
            self.writer.write(head.encode() + b"\r\n" + body)
            lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            answer_headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                answer_headers[name.strip().lower()] = value.strip()
            raw = await self.reader.readexactly(int(answer_headers.get("content-length", "0")))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            raise
        if answer_headers.get("connection", "").lower() == "close":
            self.close()
        try:
            return status, answer_headers, json.loads(raw) if raw else None
        except ValueError:
            return status, answer_headers, None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def watch_defended(
    config: dict[str, Any], seen: dict[str, float], done: asyncio.Event
) -> None:
    """Note when defended mode first shows in Redis, and when it was switched on."""
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(config["redis_url"])
    try:
        while not done.is_set():
            value = await client.get(DEFENDED_KEY)
            if value is not None:
                # The key holds "on until": the switch was defended_seconds before it (or a
                # little later, if an attempt in between extended it).
                seen["until"] = float(value)
                seen["switched_at"] = float(value) - config["defended_seconds"]
                seen["seen_at"] = time.time()
                return
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()


async def attack(config: dict[str, Any]) -> dict[str, Any]:
    """Replay the list (or a burst of it) over `connections`; one answer per pair."""
    data = json.loads(Path(config["list"]).read_text())
    emails, passwords = data["emails"], data["passwords"]
    sources, source_of = data["sources"], data["source_of"]
    rng = random.Random(config.get("seed", 0))
    burst_sources = config.get("burst_sources")
    count = len(emails)
    outcomes = bytearray(count)
    sent_at = [0.0] * count
    done_at = [0.0] * count
    blocked_until: dict[str, float] = {}
    host, port = config["base_url"].removeprefix("http://").rsplit(":", 1)
    seen: dict[str, float] = {}
    finished = asyncio.Event()
    monitor = None
    if config.get("watch"):
        monitor = asyncio.create_task(watch_defended(config, seen, finished))
    floor = bool(config.get("floor"))  # GET /healthz instead: the HTTP stack's own cost

    def pair(n: int) -> dict[str, str]:
        return {"email": emails[n], "password": passwords[n]}

    cpu0 = time.process_time()
    issued = iter(range(count))
    deadline = time.perf_counter() + config["limit_s"]

    async def connection() -> None:
        raw = RawConnection(host, int(port))
        try:
            for n in issued:
                if time.perf_counter() > deadline:
                    return
                source = rng.choice(burst_sources) if burst_sources else sources[source_of[n]]
                sent_at[n] = time.time()
                try:
                    status, headers, body = await raw.send(
                        *(("GET", "/healthz", None) if floor else ("POST", SIGN_IN, pair(n))),
                        {"x-forwarded-for": source, "user-agent": ATTACKER_AGENT},
                    )
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    outcomes[n] = CODE["other"]
                    done_at[n] = time.time()
                    continue
                outcome = classify(status, body)
                outcomes[n] = CODE[outcome]
                done_at[n] = time.time()
                if outcome == "too_many_attempts":
                    wait = float(headers.get("retry-after", "0"))
                    blocked_until[source] = max(blocked_until.get(source, 0.0), done_at[n] + wait)
        finally:
            raw.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(config["connections"])))
    elapsed = time.perf_counter() - started
    finished.set()
    if monitor is not None:
        await monitor
    return {
        "outcomes": list(outcomes),
        "sent_at": sent_at,
        "done_at": done_at,
        "elapsed_s": elapsed,
        "client_cpu_s": time.process_time() - cpu0,
        "defended": seen,
        "blocked_until": blocked_until,
    }


def attacker_main() -> None:
    config = json.loads(sys.stdin.readline())
    with suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print(json.dumps(asyncio.run(attack(config))), flush=True)


# --- the legitimate users: one separate, long-lived process ---------------------------------


@dataclass
class SignIn:
    email: str
    mfa: bool
    ok: bool
    challenged: bool
    reasons: list[str]
    total_s: float
    password_s: float
    finished_at: float  # epoch seconds


class Users:
    """The legitimate users' side: addresses, known-device tokens, TOTP steps, mailbox."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.base_url = config["base_url"]
        self.mail_dir = Path(config["mail_dir"])
        self.people = [Person(**p) for p in config["users"]]
        self.devices: dict[str, str] = {}
        self.last_step: dict[str, int] = {}
        self.busy: set[str] = set()
        self.used_links: set[str] = set()
        self.mail_seen: dict[str, tuple[set[str], str | None]] = {}
        self.rng = random.Random(config["seed"])
        self.client: httpx.AsyncClient | None = None

    def eligible(self, person: Person) -> bool:
        """Idle, and (with TOTP) a code of a step not used yet is at hand without waiting."""
        if person.email in self.busy:
            return False
        if person.totp is None:
            return True
        return self.last_step.get(person.email, -1) <= int(time.time() // TOTP_STEP_S)

    def code(self, person: Person) -> str:
        """The code of the first step not used yet (now, or the next one: RFC 6238 window)."""
        assert person.totp is not None
        now_step = int(time.time() // TOTP_STEP_S)
        step = max(now_step, self.last_step.get(person.email, -1) + 1)
        self.last_step[person.email] = step
        return pyotp.TOTP(person.totp).at(step * TOTP_STEP_S)

    def headers(self, person: Person) -> dict[str, str]:
        headers = {"x-forwarded-for": person.address, "user-agent": "TutelaApp/3.2 (bench)"}
        device = self.devices.get(person.email)
        if device:
            headers["x-tutela-device"] = device
        return headers

    def _link_in(self, path: Path) -> tuple[set[str], str | None]:
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        to = {address.lower() for _, address in getaddresses(message.get_all("To", []))}
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        token = None
        for word in text.split():
            if "/login/link#" in word:
                token = word.split("#", 1)[1].strip()
        return to, token

    async def emailed_link(self, person: Person) -> str | None:
        """The newest unused sign-in link in this person's mail, waiting for it to arrive."""
        deadline = time.perf_counter() + LINK_WAIT_S
        email = person.email.lower()
        while time.perf_counter() < deadline:
            if self.mail_dir.is_dir():
                for path in sorted(self.mail_dir.glob("*.eml")):
                    if path.name not in self.mail_seen:
                        self.mail_seen[path.name] = self._link_in(path)
                for name in sorted(self.mail_seen, reverse=True):
                    to, token = self.mail_seen[name]
                    if token and email in to and token not in self.used_links:
                        self.used_links.add(token)
                        return token
            await asyncio.sleep(0.1)
        return None

    async def sign_in(self, person: Person) -> SignIn:
        """Sign in as a real user would: password, then the code or the link if asked.

        Whatever goes wrong is tried again (after a 429, when it says) until the time limit:
        a connection the server closed is not a lockout, an unfinished sign-in is.
        """
        self.busy.add(person.email)
        started = time.perf_counter()
        deadline = started + SIGNIN_LIMIT_S
        reasons: list[str] = []
        challenged, ok, password_s = False, False, 0.0
        try:
            while not ok and time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    ok, wait = await self.one_try(person, reasons)
                except httpx.TransportError as exc:
                    ok, wait = False, 0.5
                    reasons.append(type(exc).__name__)
                password_s = password_s or time.perf_counter() - sent
                challenged = challenged or any(r in CHALLENGES for r in reasons)
                if "second_factor_without_factor" in reasons:
                    break
                if not ok:
                    await asyncio.sleep(min(wait, max(0.0, deadline - time.perf_counter())))
        finally:
            self.busy.discard(person.email)
        return SignIn(
            email=person.email,
            mfa=person.totp is not None,
            ok=ok,
            challenged=challenged,
            reasons=reasons,
            total_s=time.perf_counter() - started,
            password_s=password_s,
            finished_at=time.time(),
        )

    async def one_try(self, person: Person, reasons: list[str]) -> tuple[bool, float]:
        """One pass through the sign-in: signed in, or the seconds to wait before the next."""
        assert self.client is not None
        answer = await self.client.post(
            self.base_url + SIGN_IN,
            json={"email": person.email, "password": person.password},
            headers=self.headers(person),
        )
        body = json_of(answer)
        outcome = classify(answer.status_code, body)
        if outcome in ("signed_in_full", "signed_in_other"):
            return self.signed_in(person, body), 0.0
        if outcome == "second_factor_required":
            if person.totp is None:
                reasons.append("second_factor_without_factor")
                return False, 0.0
            factor = await self.client.post(
                self.base_url + SIGN_IN + "/factor",
                json={"challenge": body["challenge"], "code": self.code(person)},
                headers=self.headers(person),
            )
            if factor.status_code == 201:
                return self.signed_in(person, factor.json()), 0.0
            reasons.append(f"factor_{factor.status_code}")
            return False, 1.0
        if outcome in ("link_sent", "sign_in_link_required"):
            reasons.append(outcome)
            token = await self.emailed_link(person)
            if token is None:
                reasons.append("no_link_arrived")
                return False, 0.0
            link = await self.client.post(
                self.base_url + SIGN_IN + "/link",
                json={"token": token},
                headers=self.headers(person),
            )
            if link.status_code == 201:
                return self.signed_in(person, link.json()), 0.0
            reasons.append(f"link_{link.status_code}")
            return False, 0.0
        if outcome == "too_many_attempts":
            reasons.append(outcome)
            return False, float(answer.headers.get("retry-after", "1"))
        reasons.append(f"{outcome}_{answer.status_code}")
        return False, 1.0

    def signed_in(self, person: Person, body: dict[str, Any]) -> bool:
        if body.get("device_token"):
            self.devices[person.email] = body["device_token"]
        return bool(body.get("token"))

    async def setup(self) -> dict[str, Any]:
        """Each user's first sign-in from its address: the known-device token to keep."""
        gate = asyncio.Semaphore(8)

        async def one(person: Person) -> SignIn:
            async with gate:
                return await self.sign_in(person)

        results = await asyncio.gather(*(one(p) for p in self.people))
        return {
            "signed_in": sum(r.ok for r in results),
            "with_device": len(self.devices),
            "failed": [asdict(r) for r in results if not r.ok][:5],
        }

    async def load(self, rate: float, stop: asyncio.Event) -> dict[str, Any]:
        """Sign-ins started at `rate` a second (Poisson), by eligible users, until `stop`."""
        tasks: set[asyncio.Task[SignIn]] = set()
        skipped = 0
        cpu0 = time.process_time()
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.rng.expovariate(rate))
            if stop.is_set():
                break
            ready = [p for p in self.people if self.eligible(p)]
            if not ready:
                skipped += 1
                continue
            tasks.add(asyncio.create_task(self.sign_in(self.rng.choice(ready))))
        results = await asyncio.gather(*tasks)
        return {
            "signins": [asdict(r) for r in results],
            "skipped": skipped,
            "client_cpu_s": time.process_time() - cpu0,
        }


async def users_session(config: dict[str, Any]) -> None:
    """Obey the orchestrator's lines: setup, baseline <seconds>, attack ... stop, exit."""
    users = Users(config)
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=LEGIT_CONNECTIONS, max_keepalive_connections=16)
    async with httpx.AsyncClient(limits=limits, timeout=SIGNIN_LIMIT_S) as client:
        users.client = client
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "exit":
                return
            if line[0] == "setup":
                result = await users.setup()
            elif line[0] == "baseline":
                stop = asyncio.Event()
                loop.call_later(float(line[1]), stop.set)
                result = await users.load(config["rate"], stop)
            else:  # "attack": until the orchestrator says "stop"
                stop = asyncio.Event()
                running = asyncio.create_task(users.load(config["rate"], stop))
                print(json.dumps({"started": True}), flush=True)
                await loop.run_in_executor(None, sys.stdin.readline)
                stop.set()
                result = await running
            print(json.dumps(result), flush=True)


def users_main() -> None:
    config = json.loads(sys.stdin.readline())
    with suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(users_session(config))


class UsersProcess:
    """The orchestrator's handle on the users' process: a line in, a JSON line out."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--users"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.say(json.dumps(config))

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the users' process ended early")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            with suppress(BrokenPipeError):
                self.say("exit")
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_attacker(config: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--attacker"],
        input=json.dumps(config) + "\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=config["limit_s"] + 300,
    )
    if done.returncode != 0:
        raise RuntimeError("the attacker process failed:\n" + done.stderr[-3000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the baseline of the CPU comparison: argon2id in this process -----------------------------


def argon2_cpu_ms(settings: Any, rounds: int) -> float:
    """CPU milliseconds of one argon2id verification with the server's parameters."""
    hasher = Argon2Hasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    )
    stored = hasher.hash("bench-argon2-baseline")
    hasher.verify(stored, "bench-argon2-baseline")
    started = time.process_time()
    for _ in range(rounds):
        hasher.verify(stored, "bench-argon2-baseline")
    return (time.process_time() - started) * 1000 / rounds


# --- one store: set up, serve, measure, clean up ---------------------------------------------


@contextmanager
def databases(store: str) -> Iterator[dict[str, str]]:
    """Fresh main and key-store databases on PostgreSQL, dropped afterwards; none for SQLite."""
    if store != "postgresql":
        yield {}
        return
    names = [f"tutela_bench_stuffing_{os.getpid()}", f"tutela_bench_stuffing_{os.getpid()}_keys"]
    with psycopg.connect(PG_SERVER + "postgres", autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {
            "TUTELA_DATABASE_URL": PG_SERVER + names[0],
            "TUTELA_KEYSTORE_URL": PG_SERVER + names[1],
        }
    finally:
        with psycopg.connect(PG_SERVER + "postgres", autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def throttle_db(url: str) -> Iterator[redis.Redis]:
    """The bench's own Redis database, empty before and after."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2.0)
    client.ping()
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@contextmanager
def server(env: dict[str, str], work: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`tutela serve --workers 2` in its own process group, killed (group-wide) at the end."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "tutela"), "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(SERVER_WORKERS)]
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited with status {proc.returncode}:\n"
                    + (work / "server.log").read_text()
                )
            with suppress(httpx.HTTPError):
                if httpx.get(base_url + "/healthz", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield proc, base_url
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def summarise_users(result: dict[str, Any]) -> dict[str, Any]:
    signins = result["signins"]
    done = [s for s in signins if s["ok"]]
    challenged = [s for s in signins if s["challenged"]]
    users = {s["email"] for s in signins}
    locked = {s["email"] for s in signins if not s["ok"]}
    reasons = collections.Counter(r for s in signins for r in s["reasons"])
    return {
        "signins": len(signins),
        "users": len(users),
        "completed": len(done),
        "challenged_signins": len(challenged),
        "challenged_users": len({s["email"] for s in challenged}),
        "locked_out_users": len(locked),
        "reasons": dict(reasons),
        "p50_ms": percentile([s["total_s"] for s in done], 0.50) * 1000,
        "p99_ms": percentile([s["total_s"] for s in done], 0.99) * 1000,
        "p99_ms_mfa": percentile([s["total_s"] for s in done if s["mfa"]], 0.99) * 1000,
        "p99_ms_no_mfa": percentile([s["total_s"] for s in done if not s["mfa"]], 0.99) * 1000,
        "password_p99_ms": percentile([s["password_s"] for s in signins], 0.99) * 1000,
        "client_cpu_s": result["client_cpu_s"],
        "skipped_arrivals": result["skipped"],
    }


def summarise_attack(
    attack_list: dict[str, Any], result: dict[str, Any], legit_done: list[float], window_s: float
) -> dict[str, Any]:
    """Takeovers by kind of account, what the attacker saw, and when defended mode began.

    A pair counts as "before defended mode" when its request was sent before the switch:
    its throttle check ran before the switch, or a moment after.
    """
    outcomes = [OUTCOMES[c] for c in result["outcomes"]]
    kinds = attack_list["kinds"]
    sent_at, done_at = result["sent_at"], result["done_at"]
    switched = result["defended"].get("switched_at")
    seen = collections.Counter(outcomes)
    valid: dict[str, collections.Counter[str]] = {
        "valid_mfa": collections.Counter(),
        "valid_no_mfa": collections.Counter(),
    }
    taken: dict[str, set[str]] = {"valid_mfa": set(), "valid_no_mfa": set()}
    before: collections.Counter[str] = collections.Counter()
    for n, outcome in enumerate(outcomes):
        kind = kinds[n]
        if kind in valid:
            valid[kind][outcome] += 1
            if outcome == "signed_in_full":
                taken[kind].add(attack_list["emails"][n])
            if outcome != "not_sent" and (switched is None or sent_at[n] < switched):
                before[f"{kind}:{outcome}"] += 1
    first = min((t for t in sent_at if t), default=0.0)
    figures: dict[str, Any] = {
        "sent": sum(1 for o in outcomes if o != "not_sent"),
        "outcomes": dict(seen),
        "hashed": sum(seen[o] for o in HASHED),
        "valid_mfa": dict(valid["valid_mfa"]),
        "valid_no_mfa": dict(valid["valid_no_mfa"]),
        "valid_mfa_pairs": sum(valid["valid_mfa"].values()),
        "valid_no_mfa_pairs": sum(valid["valid_no_mfa"].values()),
        "taken_over_mfa": len(taken["valid_mfa"]),
        "taken_over_no_mfa": len(taken["valid_no_mfa"]),
        "sessions_issued": seen["signed_in_full"] + seen["signed_in_other"],
        "defended": switched is not None,
        "valid_sent_before_defended": dict(before),
        "elapsed_s": result["elapsed_s"],
        "client_cpu_s": result["client_cpu_s"],
        "client_cpu_ms_per_attempt": result["client_cpu_s"] * 1000 / max(len(outcomes), 1),
    }
    if switched is not None:
        answered = [n for n, t in enumerate(done_at) if t and t < switched]
        figures["defended_after_attempts"] = len(answered)
        figures["defended_after_hashed"] = sum(outcomes[n] in HASHED for n in answered)
        figures["defended_after_sent"] = sum(1 for t in sent_at if t and t < switched)
        figures["defended_after_s"] = switched - first
        # The detector's ratio rule weighs failures against every right password in its
        # window, the legitimate users' included.
        figures["legit_signins_in_window_before_defended"] = sum(
            1 for t in legit_done if switched - window_s <= t < switched
        )
    return figures


def bench_store(
    store: str, plan: Plan, seed: int, redis_url: str, *, connections: int, keep: bool = False
) -> dict[str, Any]:
    from tutela.settings import Settings

    rng = random.Random(seed)
    people = make_people(rng, plan)
    legit = [p for p in people if p.role == "legit"]
    attack_list = make_attack(rng, plan, people, avoid={p.address for p in legit})
    legit_nets = {ipaddress.ip_network(p.address + "/24", strict=False) for p in legit}
    shared_nets = sum(
        1
        for s in attack_list["sources"]
        if ipaddress.ip_network(s + "/24", strict=False) in legit_nets
    )
    defaults = Settings()
    figures: dict[str, Any] = {
        "argon2_params": f"argon2id t={defaults.argon2_time_cost}, m={defaults.argon2_memory_kib}"
        f" KiB, p={defaults.argon2_parallelism}",
        "cpu_per_argon2_ms": argon2_cpu_ms(defaults, 10 if plan is QUICK else 30),
        "attack_sources_in_legit_24s": shared_nets,
    }
    work = Path(tempfile.mkdtemp(prefix=f"tutela-bench-stuffing-{store}-", dir="/tmp"))
    try:
        (work / "attack.json").write_text(json.dumps(attack_list))
        # The burst replays pairs that are not valid: a rejected attempt must stay rejected.
        invalid = [n for n, kind in enumerate(attack_list["kinds"]) if not kind.startswith("valid")]
        burst = invalid[: plan.burst]
        burst_list = {
            "emails": [attack_list["emails"][n] for n in burst],
            "passwords": [attack_list["passwords"][n] for n in burst],
            "sources": [],
            "source_of": [],
        }
        (work / "burst.json").write_text(json.dumps(burst_list))
        with databases(store) as db_env, throttle_db(redis_url) as throttle:
            env = {
                "TUTELA_HOME": str(work / "home"),
                "TUTELA_BLOB_STORE": "local",
                "TUTELA_LOG_LEVEL": "WARNING",
                "TUTELA_REDIS_URL": redis_url,
                "TUTELA_TRUSTED_PROXIES": '["127.0.0.1"]',
                "TUTELA_MFA_REQUIRED_FOR_CAMERA_OWNERS": "false",
                **db_env,
            }
            figures.update(create_population(env, people))
            print(
                f"{store:>10}: {figures['accounts']} accounts in {figures['households']}"
                f" households made in {figures['population_s']:.0f} s"
                f" ({sum(p.totp is not None for p in people)} with TOTP)",
                flush=True,
            )
            names = [url.rsplit("/", 1)[1] for url in db_env.values()]
            with server(env, work) as (proc, base_url):
                users = UsersProcess(
                    {
                        "base_url": base_url,
                        "mail_dir": str(work / "home" / "mail"),
                        "users": [asdict(p) for p in legit],
                        "rate": plan.legit_rate,
                        "seed": seed,
                    }
                )
                try:
                    users.say("setup")
                    figures["setup"] = users.answer()
                    if figures["setup"]["signed_in"] != len(legit):
                        raise RuntimeError(f"setup sign-ins failed: {figures['setup']}")

                    cpu0 = tree_cpu(proc.pid)
                    users.say(f"baseline {plan.baseline_s}")
                    baseline_raw = users.answer()
                    baseline = summarise_users(baseline_raw)
                    baseline["server_cpu_ms_per_signin"] = (
                        (tree_cpu(proc.pid) - cpu0) * 1000 / max(baseline["signins"], 1)
                    )
                    figures["baseline"] = baseline
                    print(
                        f"{'':>10}  baseline: {baseline['signins']} legitimate sign-ins in"
                        f" {plan.baseline_s:.0f} s, p50 {baseline['p50_ms']:.0f} ms,"
                        f" p99 {baseline['p99_ms']:.0f} ms",
                        flush=True,
                    )
                    if throttle.exists(DEFENDED_KEY):
                        raise RuntimeError("defended mode is on before the attack")

                    cpu0, pg0, busy0 = tree_cpu(proc.pid), backend_cpu(names), machine_busy()
                    users.say("attack")
                    users.answer()
                    raw = run_attacker(
                        {
                            "base_url": base_url,
                            "list": str(work / "attack.json"),
                            "redis_url": redis_url,
                            "defended_seconds": defaults.defended_mode_minutes * 60.0,
                            "limit_s": plan.attack_limit_s,
                            "connections": connections,
                            "watch": True,
                        }
                    )
                    users.say("stop")
                    under_raw = users.answer()
                    under = summarise_users(under_raw)
                    busy1 = machine_busy()
                    attack_cpu = tree_cpu(proc.pid) - cpu0
                    attack_pg = backend_cpu_since(pg0, names)
                    attack = summarise_attack(
                        attack_list,
                        raw,
                        [s["finished_at"] for s in baseline_raw["signins"] + under_raw["signins"]],
                        float(defaults.stuffing_window_seconds),
                    )
                    attack["server_cpu_s"] = attack_cpu
                    attack["server_cpu_ms_per_attempt"] = attack_cpu * 1000 / max(attack["sent"], 1)
                    attack["machine_busy"] = (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1.0)
                    if names:
                        attack["postgres_cpu_s"] = attack_pg
                    figures["attack"] = attack
                    figures["under_attack"] = under
                    print(
                        f"{'':>10}  attack: {attack['sent']} attempts in"
                        f" {attack['elapsed_s']:.0f} s, {attack['hashed']} reached a hash;"
                        f" {under['signins']} legitimate sign-ins meanwhile,"
                        f" p99 {under['p99_ms']:.0f} ms",
                        flush=True,
                    )

                    # Sources the attacker was still told to wait for, well past the burst.
                    horizon = time.time() + 120
                    blocked = [s for s, t in raw["blocked_until"].items() if t > horizon]
                    burst_sources = blocked or list(raw["blocked_until"])
                    time.sleep(1.0)  # let the last notices go out
                    cpu0, pg0 = tree_cpu(proc.pid), backend_cpu(names)
                    burst_raw = run_attacker(
                        {
                            "base_url": base_url,
                            "list": str(work / "burst.json"),
                            "burst_sources": burst_sources,
                            "seed": seed,
                            "limit_s": 300.0,
                            "connections": connections,
                        }
                    )
                    burst_cpu = tree_cpu(proc.pid) - cpu0
                    burst_pg = backend_cpu_since(pg0, names)
                    burst_seen = collections.Counter(OUTCOMES[c] for c in burst_raw["outcomes"])
                    refused = burst_seen["too_many_attempts"]
                    figures["burst"] = {
                        "attempts": sum(burst_seen.values()),
                        "outcomes": dict(burst_seen),
                        "sources": len(burst_sources),
                        "elapsed_s": burst_raw["elapsed_s"],
                        "server_cpu_s": burst_cpu,
                        "client_cpu_ms_per_attempt": burst_raw["client_cpu_s"]
                        * 1000
                        / max(refused, 1),
                    }
                    if names:
                        figures["burst"]["postgres_cpu_ms_per_attempt"] = (
                            burst_pg * 1000 / max(refused, 1)
                        )
                    figures["cpu_per_rejected_ms"] = burst_cpu * 1000 / max(refused, 1)
                    # The HTTP stack's own cost on this machine: the same client, GET /healthz.
                    cpu0 = tree_cpu(proc.pid)
                    floor = run_attacker(
                        {
                            "base_url": base_url,
                            "list": str(work / "burst.json"),
                            "burst_sources": burst_sources,
                            "limit_s": 300.0,
                            "connections": connections,
                            "floor": True,
                        }
                    )
                    answered = sum(1 for c in floor["outcomes"] if OUTCOMES[c] != "not_sent")
                    figures["cpu_per_healthz_ms"] = (
                        (tree_cpu(proc.pid) - cpu0) * 1000 / max(answered, 1)
                    )
                finally:
                    users.close()
            log_lines = (work / "server.log").read_text(errors="replace").strip().splitlines()
            figures["server_log_lines"] = len(log_lines)
            if log_lines:
                errors = [line for line in log_lines if "defended mode" not in line]
                figures["server_log_tail"] = (errors or log_lines)[-5:]
            figures["mail_files"] = len(list((work / "home" / "mail").glob("*.eml")))
    finally:
        if keep:
            print(f"{'':>10}  work folder kept: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return figures


def source_version() -> str:
    """The commit measured, with "+dirty" when the working tree differs (read-only git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def headline(
    store: str, plan: Plan, figures: dict[str, Any], seed: int, connections: int, source: str
) -> dict[str, Any]:
    """The issue's figures, goals and `met`, from one store's measurements."""
    attack, under, baseline = figures["attack"], figures["under_attack"], figures["baseline"]
    no_mfa_pairs = attack["valid_no_mfa_pairs"]
    report: dict[str, Any] = {
        "bench": "stuffing",
        "quick": plan is QUICK,
        "store": store,
        "seed": seed,
        "source": source,
        "server_settings": {k: v for k, v in os.environ.items() if k.startswith("TUTELA_")},
        "server_workers": SERVER_WORKERS,
        "attacker_connections": connections,
        "attempts": attack["sent"],
        "sources": plan.sources,
        "valid_pairs": attack["valid_mfa_pairs"] + no_mfa_pairs,
        "valid_pairs_mfa": attack["valid_mfa_pairs"],
        "valid_pairs_no_mfa": no_mfa_pairs,
        "taken_over_mfa": attack["taken_over_mfa"],
        "taken_over_no_mfa": attack["taken_over_no_mfa"],
        "taken_over_no_mfa_ratio": attack["taken_over_no_mfa"] / max(no_mfa_pairs, 1),
        "sessions_issued_to_attacker": attack["sessions_issued"],
        "legit_users": under["users"],
        "legit_signins": under["signins"],
        "legit_challenged_signins": under["challenged_signins"],
        "legit_challenged_users": under["challenged_users"],
        "legit_challenged_ratio": under["challenged_users"] / max(under["users"], 1),
        "legit_locked_out": under["locked_out_users"],
        "cpu_per_rejected_ms": figures["cpu_per_rejected_ms"],
        "cpu_per_argon2_ms": figures["cpu_per_argon2_ms"],
        "cpu_ratio": figures["cpu_per_rejected_ms"] / figures["cpu_per_argon2_ms"],
        "p99_ms_attack": under["p99_ms"],
        "p99_ms_baseline": baseline["p99_ms"],
        "p99_ratio": under["p99_ms"] / max(baseline["p99_ms"], 1e-9),
        "defended_mode_entered_after_attempts": attack.get("defended_after_attempts"),
        "defended_mode_entered_after_hashed": attack.get("defended_after_hashed"),
        "defended_mode_entered_after_s": attack.get("defended_after_s"),
        "defended_mode_entered_after_sent": attack.get("defended_after_sent"),
        **{k: v for k, v in figures.items() if k not in ("cpu_per_rejected_ms",)},
    }
    report["goals"] = {
        "taken_over_mfa_max": GOAL_TAKEN_OVER_MFA,
        "taken_over_no_mfa_ratio_max": GOAL_TAKEN_OVER_NO_MFA_RATIO,
        "legit_challenged_ratio_max": GOAL_CHALLENGED_RATIO,
        "legit_locked_out_max": GOAL_LOCKED_OUT,
        "cpu_ratio_below": GOAL_CPU_RATIO,
        "p99_ratio_max": GOAL_P99_RATIO,
    }
    report["met"] = {
        "taken_over_mfa": report["taken_over_mfa"] <= GOAL_TAKEN_OVER_MFA,
        "taken_over_no_mfa_ratio": report["taken_over_no_mfa_ratio"]
        <= GOAL_TAKEN_OVER_NO_MFA_RATIO,
        "legit_challenged_ratio": report["legit_challenged_ratio"] <= GOAL_CHALLENGED_RATIO,
        "legit_locked_out": report["legit_locked_out"] <= GOAL_LOCKED_OUT,
        "cpu_ratio": report["cpu_ratio"] < GOAL_CPU_RATIO,
        "p99_ratio": report["p99_ratio"] <= GOAL_P99_RATIO,
    }
    return report


def report_lines(report: dict[str, Any]) -> list[str]:
    attack, under, burst = report["attack"], report["under_attack"], report["burst"]
    met = {k: "met" if v else "NOT met" for k, v in report["met"].items()}
    defended = (
        f"after {report['defended_mode_entered_after_attempts']} answered attempts"
        f" ({report['defended_mode_entered_after_hashed']} hashed,"
        f" {report['defended_mode_entered_after_sent']} sent,"
        f" {report['defended_mode_entered_after_s']:.1f} s;"
        f" {attack['legit_signins_in_window_before_defended']} legitimate sign-ins in the"
        " detector's window)"
        if attack["defended"]
        else "never"
    )
    return [
        f"  attacker saw: {attack['outcomes']}",
        f"  defended mode entered {defended}; valid pairs sent before it:"
        f" {attack['valid_sent_before_defended'] or 'none'}",
        f"  valid pairs: {report['valid_pairs_mfa']} with MFA {attack['valid_mfa']},"
        f" {report['valid_pairs_no_mfa']} without {attack['valid_no_mfa']}",
        f"  accounts taken over: with MFA {report['taken_over_mfa']}"
        f" (goal 0: {met['taken_over_mfa']}),"
        f" without {report['taken_over_no_mfa']} = {report['taken_over_no_mfa_ratio'] * 100:.3f}%"
        f" of their valid pairs (goal <= 0.01%: {met['taken_over_no_mfa_ratio']});"
        f" sessions issued to the attacker: {report['sessions_issued_to_attacker']}",
        f"  legitimate users under attack: {report['legit_signins']} sign-ins by"
        f" {report['legit_users']} users; challenged {report['legit_challenged_users']} users"
        f" ({report['legit_challenged_ratio'] * 100:.1f}%, goal <= 1%:"
        f" {met['legit_challenged_ratio']}; {report['legit_challenged_signins']} sign-ins),"
        f" locked out {report['legit_locked_out']} (goal 0: {met['legit_locked_out']})"
        + (f"; {under['reasons']}" if under["reasons"] else ""),
        f"  CPU per rejected attempt {report['cpu_per_rejected_ms']:.2f} ms"
        f" ({burst['outcomes']} from {burst['sources']} throttled addresses) vs"
        f" {report['cpu_per_argon2_ms']:.1f} ms per argon2id verification:"
        f" ratio {report['cpu_ratio'] * 100:.1f}% (goal < 5%: {met['cpu_ratio']});"
        f" GET /healthz costs {report['cpu_per_healthz_ms']:.2f} ms",
        f"  legitimate sign-in p99 {report['p99_ms_attack']:.0f} ms under attack vs"
        f" {report['p99_ms_baseline']:.0f} ms without: ratio {report['p99_ratio']:.2f}"
        f" (goal <= 2: {met['p99_ratio']}); p50 {under['p50_ms']:.0f} vs"
        f" {report['baseline']['p50_ms']:.0f} ms",
        f"  server CPU over the attack {attack['server_cpu_s']:.0f} s"
        f" ({attack['server_cpu_ms_per_attempt']:.1f} ms per attempt), machine busy"
        f" {attack['machine_busy'] * 100:.0f}%; attacker client CPU {attack['client_cpu_s']:.0f} s",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 attempts from 200 addresses")
    parser.add_argument("--store", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument(
        "--connections", type=int, default=ATTACK_CONNECTIONS, help="the attacker's connections"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--redis-url", default=REDIS_URL, help="a Redis db of its own: flushed")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (and log)")
    parser.add_argument("--attacker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--users", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attacker:
        attacker_main()
        return
    if args.users:
        users_main()
        return

    plan = QUICK if args.quick else FULL
    print(
        f"stuffing: {plan.attempts} attempts from {plan.sources} addresses"
        f" ({VALID_SHARE:.0%} valid pairs, half with MFA) over {args.connections} connections,"
        f" {plan.legit_users} legitimate users at {plan.legit_rate:g} sign-ins/s;"
        f" {SERVER_WORKERS} server workers, throttle in Redis, {os.cpu_count()} cores shared"
        " by the server, both clients, Redis and the database",
        flush=True,
    )
    started = time.perf_counter()
    source = source_version()  # what the server runs: read before it starts
    figures = bench_store(
        args.store, plan, args.seed, args.redis_url, connections=args.connections, keep=args.keep
    )
    report = headline(args.store, plan, figures, args.seed, args.connections, source)
    report["elapsed_s"] = time.perf_counter() - started
    for line in report_lines(report):
        print(line, flush=True)
    if plan is QUICK:
        report["note"] = "quick run: 10,000 attempts from 200 addresses"
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()}))


if __name__ == "__main__":
    main()
