"""The HTTP side of `bench/customers.py`: `tutela serve` processes and a customer's closure.

A customer closes their account as the API lets them (C10, C7, A8, S7): sign in with the
password (`POST /api/v1/auth/token`), confirm it is them (`POST /api/v1/auth/step-up`,
the password again: a home without a camera has no second factor to enrol), both before
the clock starts; then `POST /api/v1/erasures {"scope": "household"}` with an
Idempotency-Key. The 202 ends every session of the home at once (C10), so the customer
cannot ask `GET /api/v1/erasures/{id}` any more: they poll `GET /api/v1/receipts/{id}`,
which answers 404 until the request is completed, and check the receipt's Ed25519
signature with the key from `/api/v1/receipts/public-key`.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

API = "/api/v1"
POLL_SECONDS = 0.01
REQUEST_TIMEOUT_S = 600.0


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


def tree_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of processes and their descendants."""
    total = 0.0
    for pid in pids:
        with suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
    return total


def tutela(*args: str) -> list[str]:
    """The command line of `tutela ARGS` from this virtual environment."""
    return [str(Path(sys.executable).parent / "tutela"), *args]


@contextmanager
def process(
    command: list[str], env: dict[str, str], log_path: Path, health_url: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own process group, stopped with SIGTERM (group-wide) at the end;
    with `health_url`, started once that answers 200."""
    log = log_path.open("wb")
    proc = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while health_url is not None:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"`{Path(command[0]).name}` exited with status {proc.returncode}:\n"
                    + log_path.read_text()
                )
            with suppress(httpx.HTTPError):
                if httpx.get(health_url, timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{health_url} did not answer within 60 s")
            time.sleep(0.2)
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextmanager
def server(env: dict[str, str], log_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`tutela serve` on a free loopback port (one API process, as by default)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = tutela("serve", "--host", "127.0.0.1", "--port", str(port))
    with process(command, env, log_path, health_url=base + "/healthz") as proc:
        yield proc, base


@dataclass
class SignedIn:
    """A customer's stepped-up session, ready to ask for the closure."""

    email: str
    base: str
    token: str
    stepped_up_at: float
    household_id: uuid.UUID
    items: tuple[uuid.UUID, ...] = ()
    reconfirmed: int = 0


def sign_in(client: httpx.Client, base: str, customer: Any, password: str) -> SignedIn:
    """Password sign-in, then the step-up a household closure needs (C7)."""
    r = client.post(f"{base}{API}/auth/token", json={"email": customer.email, "password": password})
    if r.status_code != 201:
        raise RuntimeError(f"sign-in answered {r.status_code}: {r.text[:300]}")
    token = r.json()["token"]
    signed = SignedIn(customer.email, base, token, 0.0, customer.household_id, customer.items)
    step_up(client, signed, password)
    return signed


def step_up(client: httpx.Client, signed: SignedIn, password: str) -> None:
    r = client.post(
        f"{signed.base}{API}/auth/step-up",
        json={"password": password},
        headers={"authorization": f"Bearer {signed.token}"},
    )
    if r.status_code != 204:
        raise RuntimeError(f"step-up answered {r.status_code}: {r.text[:300]}")
    signed.stepped_up_at = time.monotonic()


@dataclass
class Closure:
    """One customer's closure as the customer saw it (times in ms from the POST)."""

    request_id: str
    accepted_ms: float
    receipt_ms: float
    polls: int
    started: float = field(repr=False)
    checked: dict[str, Any] = field(default_factory=dict)
    steps_ms: dict[str, float] = field(default_factory=dict)
    """Each step's end as the signed receipt records it, in ms after `requested_at`."""


def close_account(
    client: httpx.Client,
    signed: SignedIn,
    public_key: Any,
    *,
    password: str,
    step_up_seconds: float,
    after_accept: Any = None,
    poll_seconds: float = POLL_SECONDS,
) -> Closure:
    """POST the household erasure, then poll for its receipt and verify the signature.

    A step-up older than `step_up_seconds` (less a minute) is confirmed again before the
    clock starts: a long run must not fail on C7's window.
    """
    from tutela.erasure import receipts

    if time.monotonic() - signed.stepped_up_at > step_up_seconds - 60:
        step_up(client, signed, password)
        signed.reconfirmed += 1
    headers = {"authorization": f"Bearer {signed.token}", "idempotency-key": str(uuid.uuid4())}
    started = time.perf_counter()
    r = client.post(f"{signed.base}{API}/erasures", json={"scope": "household"}, headers=headers)
    accepted = time.perf_counter()
    if r.status_code != 202:
        raise RuntimeError(f"POST /erasures answered {r.status_code}: {r.text[:300]}")
    request_id = r.json()["id"]
    checked = after_accept(signed) if after_accept is not None else {}
    polls = 0
    while True:
        polls += 1
        got = client.get(f"{signed.base}{API}/receipts/{request_id}")
        if got.status_code == 200:
            break
        if got.status_code != 404:
            raise RuntimeError(f"GET /receipts answered {got.status_code}: {got.text[:300]}")
        if time.perf_counter() - started > REQUEST_TIMEOUT_S:
            raise RuntimeError(f"no receipt {REQUEST_TIMEOUT_S:.0f} s after the request")
        time.sleep(poll_seconds)
    body = receipts.verify(got.content, public_key)  # raises ReceiptInvalid if not signed
    done = time.perf_counter()
    if body.get("scope", {}).get("kind") != "household":
        raise RuntimeError(f"the receipt is not a household's: {sorted(body)}")
    requested = datetime.fromisoformat(body["requested_at"])
    steps = {
        name: (datetime.fromisoformat(at) - requested).total_seconds() * 1000
        for name, at in body.get("steps", {}).items()
    }
    return Closure(
        request_id,
        (accepted - started) * 1000,
        (done - started) * 1000,
        polls,
        started,
        checked,
        steps,
    )


def receipt_split(closures: list[Closure]) -> dict[str, float]:
    """Medians from the receipts' step times: the API's part (request to `keys`), the
    worker's first step (`keys` to `blobs`: the wait for a pass, plus deleting the blobs)
    and the worker's other steps (`blobs` to `verify`)."""
    import statistics

    out: dict[str, float] = {}
    spans = {
        "receipt_keys_ms": (None, "keys"),
        "receipt_keys_to_blobs_ms": ("keys", "blobs"),
        "receipt_blobs_to_verify_ms": ("blobs", "verify"),
    }
    for name, (first, last) in spans.items():
        values = [
            c.steps_ms[last] - (c.steps_ms[first] if first else 0.0)
            for c in closures
            if last in c.steps_ms and (first is None or first in c.steps_ms)
        ]
        if values:
            out[name] = statistics.median(values)
    return out


def public_key(base: str) -> Any:
    from tutela.erasure import receipts

    r = httpx.get(f"{base}{API}/receipts/public-key", timeout=30)
    r.raise_for_status()
    return receipts.load_public_key(r.content)


def sign_in_all(bases: list[str], customers: list[Any], password: str) -> list[SignedIn]:
    """Sign every customer in (4 at a time), spread over `bases` round-robin."""
    from concurrent.futures import ThreadPoolExecutor

    def one(at: int) -> SignedIn:
        with httpx.Client(timeout=60) as client:
            return sign_in(client, bases[at % len(bases)], customers[at], password)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(len(customers))))


def run_clients(
    signed: list[SignedIn],
    public: Any,
    *,
    clients: int,
    password: str,
    step_up_seconds: float,
    poll_seconds: float = POLL_SECONDS,
) -> tuple[list[Closure], float]:
    """`clients` threads, each closing the next customer's account until none is left.

    Returns the closures and the wall time from the first POST to the last receipt.
    """
    import threading

    queue = list(reversed(signed))
    lock = threading.Lock()
    done: list[Closure] = []
    errors: list[BaseException] = []

    def client_loop() -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            while True:
                with lock:
                    if not queue or errors:
                        return
                    customer = queue.pop()
                try:
                    closure = close_account(
                        client,
                        customer,
                        public,
                        password=password,
                        step_up_seconds=step_up_seconds,
                        poll_seconds=poll_seconds,
                    )
                except BaseException as exc:  # reported by the caller, after the others stop
                    with lock:
                        errors.append(exc)
                    return
                with lock:
                    done.append(closure)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    first = min(c.started for c in done)
    last = max(c.started + c.receipt_ms / 1000 for c in done)
    return done, last - first
