"""The legitimate users: one separate, long-lived process signing in from known devices."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import httpx
import pyotp

from stuffing_common import (
    LEGIT_CONNECTIONS,
    LINK_WAIT_S,
    SIGN_IN,
    SIGNIN_LIMIT_S,
    TOTP_STEP_S,
    Person,
    classify,
    json_of,
    percentile,
)


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
        a connection the server closed is not a lockout, an unfinished sign-in is. The
        sign-in is "challenged" when any answer is other than the session (or, for a user
        with TOTP, the code prompt that leads to it): every entry in `reasons` is one.
        """
        self.busy.add(person.email)
        started = time.perf_counter()
        deadline = started + SIGNIN_LIMIT_S
        reasons: list[str] = []
        ok, password_s = False, 0.0
        try:
            while not ok and time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    ok, wait = await self.one_try(person, reasons)
                except httpx.TransportError as exc:
                    ok, wait = False, 0.5
                    reasons.append(type(exc).__name__)
                password_s = password_s or time.perf_counter() - sent
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
            challenged=bool(reasons),
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
        return await self.follow(person, answer, reasons, steps=3)

    async def follow(
        self, person: Person, answer: httpx.Response, reasons: list[str], *, steps: int
    ) -> tuple[bool, float]:
        """Take the step an answer asks for (the code, the emailed link), up to `steps` more."""
        assert self.client is not None
        body = json_of(answer)
        outcome = classify(answer.status_code, body)
        if outcome in ("signed_in_full", "signed_in_other"):
            return self.signed_in(person, body), 0.0
        if outcome == "too_many_attempts":
            reasons.append(outcome)
            return False, float(answer.headers.get("retry-after", "1"))
        steps_asked = ("second_factor_required", "link_sent", "sign_in_link_required")
        if steps <= 0 or outcome not in steps_asked:
            reasons.append(f"{outcome}_{answer.status_code}")
            return False, 1.0
        if outcome == "second_factor_required":
            if person.totp is None:
                reasons.append("second_factor_without_factor")
                return False, 0.0
            following = await self.client.post(
                self.base_url + SIGN_IN + "/factor",
                json={"challenge": body["challenge"], "code": self.code(person)},
                headers=self.headers(person),
            )
            if following.status_code >= 400 and following.status_code != 429:
                reasons.append(f"factor_{following.status_code}")
                return False, 1.0
            return await self.follow(person, following, reasons, steps=steps - 1)
        # "link_sent" (202) or "sign_in_link_required" (401): the mailbox confirms.
        reasons.append(outcome)
        token = await self.emailed_link(person)
        if token is None:
            reasons.append("no_link_arrived")
            return False, 0.0
        following = await self.client.post(
            self.base_url + SIGN_IN + "/link",
            json={"token": token},
            headers=self.headers(person),
        )
        if following.status_code >= 400 and following.status_code != 429:
            reasons.append(f"link_{following.status_code}")
            return False, 0.0
        return await self.follow(person, following, reasons, steps=steps - 1)

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
                answer({"started": True})
                await loop.run_in_executor(None, sys.stdin.readline)
                stop.set()
                result = await running
            answer(result)


def answer(result: dict[str, Any]) -> None:
    """One JSON line to the orchestrator. Blocking first: the event loop may have made
    stdout non-blocking, and a long line would then be cut."""
    os.set_blocking(sys.stdout.fileno(), True)
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
            [sys.executable, __file__],
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


if __name__ == "__main__":
    users_main()
