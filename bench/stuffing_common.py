"""What the credential-stuffing benchmark's modules share: sizes, people, answers, CPU clocks."""

from __future__ import annotations

import math
import socket
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

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
GOAL_TAKEN_OVER_NO_MFA = 0
GOAL_CHALLENGED_RATIO = 0.01
GOAL_LOCKED_OUT = 0
GOAL_CPU_RATIO = 0.05
GOAL_P99_RATIO = 2.0
GOAL_RECOVERY_TAKEN_OVER = 0
GOAL_GUESSING_FALLEN = 0

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
    recovery_requests: int  # the recovery-abuse run
    recovery_sources: int
    recovery_accounts: int  # real accounts among its addresses
    guess_victims: int  # the known-device factor-guessing run
    guess_cap: int  # guesses checked per victim before the run gives up on 24 h


FULL = Plan(
    attempts=100_000,
    sources=2_000,
    bystanders=1_800,
    legit_users=200,
    legit_rate=3.0,
    baseline_s=60.0,
    burst=5_000,
    attack_limit_s=1_800.0,
    recovery_requests=10_000,
    recovery_sources=500,
    recovery_accounts=200,
    guess_victims=5,
    guess_cap=3_000,
)
QUICK = Plan(
    attempts=10_000,
    sources=200,
    bystanders=160,
    legit_users=60,
    legit_rate=3.0,
    baseline_s=20.0,
    burst=5_000,
    attack_limit_s=300.0,
    recovery_requests=2_000,
    recovery_sources=100,
    recovery_accounts=50,
    guess_victims=2,
    guess_cap=500,
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
