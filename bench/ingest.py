"""Benchmark of voice ingestion through the real HTTP API, against a raw-SQL-and-file floor.

Run as `.venv/bin/python bench/ingest.py [--quick] [--store sqlite|postgresql|both]`.
For each store it makes a fresh TUTELA_HOME (blobs on local disk; on PostgreSQL two fresh
databases, the main one and the key store, dropped at the end), runs the migrations,
creates one household (two adults, two children, four devices that take voice), then
starts `tutela serve --workers 2` and measures:

* ingest: 16 concurrent connections POSTing a real 1 s, 8 kHz, 16-bit mono WAV
  (16,044 bytes) to `/api/v1/ingest/media` with a device token, spread over every
  (device, profile) pair. Only 201 answers count; any other status is reported.
  The load comes from ONE separate client process (asyncio + httpx), which competes
  with the server and the database for the machine's two cores: its CPU time is reported
  next to the server's and PostgreSQL's.
  Full: 100 warm-up requests, then 3000 measured in three rounds; quick: 30, then 300.
  The headline rate is the median round's (the machine is shared and noisy).
* raw floor (baseline), with the server stopped: the same number of items written by
  2 processes (as many as the server has workers), each item being one key-row INSERT
  into the key store (committed), the WAV bytes written durably to a new file (created
  in place, then fsync: what the blob store does), then one row of the same columns as `items`
  INSERTed into the main store (committed). Same database kind, same SQLite pragmas;
  no encryption, no ORM, no HTTP: the least that the same durable work can cost.

The ratio is ingest items/s over floor items/s. Goal (from the issue): >= 300 items/s on
PostgreSQL. The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/"
GOAL_PG_ITEMS_PER_S = 300.0
CONCURRENCY = 16
ROUNDS = 3
SERVER_WORKERS = 2
FLOOR_PROCESSES = 2
STORES = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Plan:
    warmup: int
    count: int
    load_limit_s: float
    floor_limit_s: float


FULL = Plan(warmup=100, count=3000, load_limit_s=40.0, floor_limit_s=30.0)
QUICK = Plan(warmup=30, count=300, load_limit_s=15.0, floor_limit_s=10.0)


def voice_clip() -> bytes:
    """One second of a 440 Hz tone: 8 kHz, 16-bit, mono, as a WAV file (16,044 bytes)."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000))) for i in range(8000)
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(8000)
        clip.writeframes(frames)
    return out.getvalue()


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


def machine_counters() -> tuple[float, float, int]:
    """Busy jiffies, all jiffies and context switches of the whole machine (/proc/stat)."""
    lines = Path("/proc/stat").read_text().splitlines()
    fields = [float(v) for v in lines[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    switches = next(int(line.split()[1]) for line in lines if line.startswith("ctxt "))
    return sum(fields) - idle, sum(fields), switches


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
    """CPU seconds of each PostgreSQL backend connected to one of `databases`, by pid.

    Only backends alive at both ends of the run are fully counted: one that a connection
    pool opens and closes within the run is gone before it can be read.
    """
    found: dict[int, float] = {}
    if not databases:
        return found
    for proc in psutil.process_iter(["name", "cmdline"]):
        with suppress(psutil.Error):
            line = " ".join(proc.info["cmdline"] or ())
            if line.startswith("postgres:") and any(f" {db} " in line for db in databases):
                times = proc.cpu_times()
                found[proc.pid] = times.user + times.system
    return found


def sessions_opened(databases: list[str]) -> int:
    """Connections ever opened to `databases` (pg_stat_database.sessions, PostgreSQL 14+)."""
    if not databases:
        return 0
    with psycopg.connect(PG_SERVER + "postgres", autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(sessions), 0) FROM pg_stat_database WHERE datname = ANY(%s)",
            (databases,),
        ).fetchone()
    return int(row[0]) if row else 0


# --- the load client: one separate process --------------------------------------------------


async def drive(config: dict[str, Any], clip: bytes) -> dict[str, Any]:
    """Warm up, then send `count` uploads over CONCURRENCY connections; time and sample CPU."""
    pairs = config["pairs"]
    url = config["base_url"] + "/api/v1/ingest/media"
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def run(count: int, limit_s: float) -> dict[str, Any]:
            statuses: collections.Counter[str] = collections.Counter()
            latencies: list[float] = []
            issued = iter(range(count))
            deadline = time.perf_counter() + limit_s

            async def connection() -> None:
                for n in issued:
                    if time.perf_counter() > deadline:
                        return
                    token, profile_id = pairs[n % len(pairs)]
                    captured = datetime.now(UTC) - timedelta(minutes=1)
                    started = time.perf_counter()
                    try:
                        answer = await client.post(
                            url,
                            params={
                                "profile_id": profile_id,
                                "kind": "voice",
                                "captured_at": captured.isoformat(),
                            },
                            content=clip,
                            headers={
                                "authorization": "Bearer " + token,
                                "content-type": "audio/wav",
                            },
                        )
                    except httpx.HTTPError as exc:
                        statuses[type(exc).__name__] += 1
                        continue
                    statuses[str(answer.status_code)] += 1
                    if answer.status_code == 201:
                        latencies.append(time.perf_counter() - started)

            started = time.perf_counter()
            await asyncio.gather(*(connection() for _ in range(CONCURRENCY)))
            elapsed = time.perf_counter() - started
            return {"statuses": statuses, "latencies": latencies, "elapsed_s": elapsed}

        await run(config["warmup"], config["load_limit_s"] / 2)
        busy0, total0, switches0 = machine_counters()
        server0 = tree_cpu(config["server_pid"])
        backends0 = backend_cpu(config["databases"])
        opened0 = sessions_opened(config["databases"])
        client0 = time.process_time()
        # Three rounds: the machine is shared, so the headline rate is the median round's.
        rounds = [
            await run(config["count"] // ROUNDS, config["load_limit_s"] / ROUNDS)
            for _ in range(ROUNDS)
        ]
        measured = {
            "statuses": sum((r["statuses"] for r in rounds), collections.Counter()),
            "latencies": [x for r in rounds for x in r["latencies"]],
            "elapsed_s": sum(r["elapsed_s"] for r in rounds),
            "round_rates": [r["statuses"].get("201", 0) / r["elapsed_s"] for r in rounds],
        }
        client_cpu = time.process_time() - client0
        backends1 = backend_cpu(config["databases"])
        server_cpu = tree_cpu(config["server_pid"]) - server0
        busy1, total1, switches1 = machine_counters()
        await asyncio.sleep(1.0)  # backends report their statistics about once a second
        opened = sessions_opened(config["databases"]) - opened0

    statuses = measured["statuses"]
    latencies = measured["latencies"]
    return {
        "sent": sum(statuses.values()),
        "ok": statuses.get("201", 0),
        "other": {k: v for k, v in statuses.items() if k != "201"},
        "elapsed_s": measured["elapsed_s"],
        "round_rates": measured["round_rates"],
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "client_cpu_s": client_cpu,
        "server_cpu_s": server_cpu,
        "postgres_cpu_s": sum(v - backends0.get(pid, 0.0) for pid, v in backends1.items()),
        "machine_busy": (busy1 - busy0) / max(total1 - total0, 1.0),
        "machine_switches": switches1 - switches0,
        "connections_opened": opened,
    }


def client_main() -> None:
    config = json.loads(sys.stdin.readline())
    clip = Path(config["clip"]).read_bytes()
    with suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print(json.dumps(asyncio.run(drive(config, clip))), flush=True)


# --- the raw floor: processes doing the same durable writes by hand --------------------------


def floor_ddl(store: str) -> tuple[str, str]:
    """Tables of the same columns as `items` and `item_keys`, primary keys only."""
    uid, stamp, blob = (
        ("uuid", "timestamptz", "bytea")
        if store == "postgresql"
        else (
            "char(32)",
            "text",
            "blob",
        )
    )
    items = (
        f"CREATE TABLE bench_floor_items (household_id {uid} NOT NULL, id {uid} NOT NULL,"
        f" profile_id {uid} NOT NULL, device_id {uid}, source_item_id {uid},"
        f" kind varchar(16) NOT NULL, subject_class varchar(8) NOT NULL,"
        f" media_type varchar(64) NOT NULL,"
        f" captured_at {stamp} NOT NULL, received_at {stamp} NOT NULL, size bigint NOT NULL,"
        f" content_mac {blob} NOT NULL, blob_key varchar(200), sealed_size bigint NOT NULL,"
        f" sealed_fields {blob}, state varchar(16) NOT NULL, PRIMARY KEY (household_id, id))"
    )
    keys = (
        f"CREATE TABLE bench_floor_item_keys (household_id {uid} NOT NULL,"
        f" item_id {uid} NOT NULL, profile_id {uid} NOT NULL, wrapped {blob} NOT NULL,"
        f" created_at {stamp} NOT NULL, PRIMARY KEY (household_id, item_id))"
    )
    return items, keys


FLOOR_ITEM_SQL = (
    "INSERT INTO bench_floor_items (household_id, id, profile_id, device_id, kind,"
    " subject_class, media_type, captured_at, received_at, size, content_mac, blob_key,"
    " sealed_size, state) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
FLOOR_KEY_SQL = (
    "INSERT INTO bench_floor_item_keys (household_id, item_id, profile_id, wrapped, created_at)"
    " VALUES (%s, %s, %s, %s, %s)"
)


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A connection with the pragmas of tutela.db.engine, so the floor pays the same."""
    conn = sqlite3.connect(path, timeout=10.0)
    for pragma in (
        "foreign_keys=ON",
        "journal_mode=WAL",
        "secure_delete=ON",
        "synchronous=NORMAL",
        "busy_timeout=10000",
    ):
        conn.execute("PRAGMA " + pragma)
    return conn


def write_file(folder: Path, name: str, data: bytes) -> None:
    """A durable write of a new file: created in place (O_EXCL), then fsync."""
    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def floor_main() -> None:
    """One floor process: connect, say ready, wait for go, write, report its span."""
    config = json.loads(sys.stdin.readline())
    clip = Path(config["clip"]).read_bytes()
    folder = Path(config["blob_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    postgres = config["store"] == "postgresql"
    if postgres:
        main_db: Any = psycopg.connect(config["main"])
        keys_db: Any = psycopg.connect(config["keys"])
    else:
        main_db, keys_db = sqlite_connect(config["main"]), sqlite_connect(config["keys"])
    item_sql, key_sql = FLOOR_ITEM_SQL, FLOOR_KEY_SQL
    if not postgres:
        item_sql, key_sql = item_sql.replace("%s", "?"), key_sql.replace("%s", "?")

    def ident() -> Any:
        value = uuid.uuid4()
        return value if postgres else value.hex

    def stamp(at: datetime) -> Any:
        return at if postgres else at.isoformat()

    household, profile, device = ident(), ident(), ident()
    print("ready", flush=True)
    sys.stdin.readline()
    done = 0
    started = time.time()
    deadline = time.perf_counter() + config["limit_s"]
    for _ in range(config["count"]):
        if time.perf_counter() > deadline:
            break
        item, now = ident(), datetime.now(UTC)
        keys_db.execute(key_sql, (household, item, profile, os.urandom(60), stamp(now)))
        keys_db.commit()
        blob_key = f"{household}-{item}"
        write_file(folder, blob_key, clip)
        main_db.execute(
            item_sql,
            (
                household,
                item,
                profile,
                device,
                "voice",
                "adult",
                "audio/wav",
                stamp(now - timedelta(minutes=1)),
                stamp(now),
                len(clip),
                os.urandom(32),
                blob_key,
                len(clip) + 60,
                "active",
            ),
        )
        main_db.commit()
        done += 1
    print(json.dumps({"done": done, "start": started, "end": time.time()}), flush=True)
    main_db.close()
    keys_db.close()


def measure_floor(
    store: str, urls: dict[str, str], work: Path, count: int, limit_s: float
) -> float:
    """Items/s of FLOOR_PROCESSES processes started together, over their joint span."""
    items_ddl, keys_ddl = floor_ddl(store)
    if store == "postgresql":
        for url, ddl in ((urls["main"], items_ddl), (urls["keys"], keys_ddl)):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(ddl)
    else:
        for path, ddl in ((urls["main"], items_ddl), (urls["keys"], keys_ddl)):
            with sqlite_connect(path) as conn:
                conn.execute(ddl)
            conn.close()
    share = math.ceil(count / FLOOR_PROCESSES)
    config = {**urls, "store": store, "clip": str(work / "clip.wav"), "limit_s": limit_s}
    workers = []
    try:
        for n in range(FLOOR_PROCESSES):
            worker = subprocess.Popen(
                [sys.executable, __file__, "--floor"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            workers.append(worker)
            assert worker.stdin is not None
            job = {**config, "count": share, "blob_dir": str(work / "floor" / str(n))}
            worker.stdin.write(json.dumps(job) + "\n")
            worker.stdin.flush()
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("a floor process did not start")
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        spans = []
        for worker in workers:
            out, _ = worker.communicate(timeout=limit_s + 60)
            if worker.returncode != 0:
                raise RuntimeError("a floor process failed")
            spans.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    span = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    return sum(s["done"] for s in spans) / span


# --- one store: set up, serve, load, floor, clean up ------------------------------------------


@contextmanager
def databases(store: str) -> Iterator[dict[str, str]]:
    """Fresh main and key-store databases on PostgreSQL, dropped afterwards; none for SQLite."""
    if store != "postgresql":
        yield {}
        return
    names = [f"tutela_bench_{os.getpid()}", f"tutela_bench_{os.getpid()}_keys"]
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


def create_household(env: dict[str, str]) -> list[tuple[str, str]]:
    """Migrate both stores, create one home; return every (device token, profile id) pair."""
    from tutela.container import build
    from tutela.db import migrate
    from tutela.demo import signed_form_consent
    from tutela.households.models import AccountRole
    from tutela.households.service import AdultSpec, ChildSpec, DeviceSpec, HomeSpec, create_home
    from tutela.settings import Settings

    settings = Settings(**{k.removeprefix("TUTELA_").lower(): v for k, v in env.items()})
    migrate.upgrade(settings.main_url, settings.keys_url)
    container = build(settings)
    try:
        password_hash = container.hasher.hash("bench horse battery staple")
        spec = HomeSpec(
            adults=(
                AdultSpec("Ana Parent", "ana@bench.tutela.test", password_hash, AccountRole.OWNER),
                AdultSpec("Ben Parent", "ben@bench.tutela.test", password_hash),
            ),
            children=(
                ChildSpec("Lily Child", date(2018, 5, 1), ("ana@bench.tutela.test",)),
                ChildSpec("Max Child", date(2020, 2, 9), ("ben@bench.tutela.test",)),
            ),
            devices=(
                DeviceSpec("voice", "Kitchen speaker"),
                DeviceSpec("voice", "Bedroom speaker"),
                DeviceSpec("phone", "Ana's phone"),
                DeviceSpec("camera", "Nursery cam", "nursery"),
            ),
        )
        with container.stores.session() as session:
            home = create_home(session, container.vault.keys, spec=spec, now=container.clock.now())
            # The children's uploads pass the consent gates only with a parent's verified
            # consent (C3), so the bench measures the path a real home's uploads take.
            for child, profile_id in zip(spec.children, home.child_profiles, strict=True):
                signed_form_consent(
                    session,
                    container.consent,
                    household_id=home.household_id,
                    child_profile_id=profile_id,
                    guardian_account_id=home.accounts[child.guardian_emails[0]],
                    at=container.clock.now(),
                )
            session.commit()
    finally:
        container.close()
    profiles = [*home.adult_profiles.values(), *home.child_profiles]
    return [(token, str(p)) for token in home.device_tokens.values() for p in profiles]


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


def load(config: dict[str, Any]) -> dict[str, Any]:
    client = subprocess.run(
        [sys.executable, __file__, "--client"],
        input=json.dumps(config) + "\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=config["load_limit_s"] * 2 + 120,
    )
    if client.returncode != 0:
        raise RuntimeError("the load client failed:\n" + client.stderr[-3000:])
    result: dict[str, Any] = json.loads(client.stdout.strip().splitlines()[-1])
    return result


def bench_store(store: str, plan: Plan, clip: bytes) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"tutela-bench-ingest-{store}-", dir="/tmp"))
    try:
        (work / "clip.wav").write_bytes(clip)
        with databases(store) as db_env:
            env = {
                "TUTELA_HOME": str(work / "home"),
                "TUTELA_BLOB_STORE": "local",
                "TUTELA_LOG_LEVEL": "WARNING",
                **db_env,
            }
            pairs = create_household(env)
            names = [url.rsplit("/", 1)[1] for url in db_env.values()]
            with server(env, work) as (proc, base_url):
                result = load(
                    {
                        "base_url": base_url,
                        "pairs": pairs,
                        "clip": str(work / "clip.wav"),
                        "warmup": plan.warmup,
                        "count": plan.count,
                        "load_limit_s": plan.load_limit_s,
                        "server_pid": proc.pid,
                        "databases": names,
                    }
                )
            server_log = (work / "server.log").read_text(errors="replace").strip()
            if store == "postgresql":
                urls = {
                    "main": db_env["TUTELA_DATABASE_URL"],
                    "keys": db_env["TUTELA_KEYSTORE_URL"],
                }
            else:
                urls = {
                    "main": str(work / "home" / "tutela.db"),
                    "keys": str(work / "home" / "keys.db"),
                }
            floor = measure_floor(store, urls, work, plan.count, plan.floor_limit_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ok = result["ok"]
    items_per_s = statistics.median(result["round_rates"])
    per_item = 1000 / max(ok, 1)
    figures: dict[str, Any] = {
        f"{store}_items_per_s": items_per_s,
        f"{store}_round_items_per_s": [round(r, 1) for r in result["round_rates"]],
        f"{store}_p50_ms": result["p50_ms"],
        f"{store}_p99_ms": result["p99_ms"],
        f"{store}_raw_items_per_s": floor,
        f"{store}_ratio": items_per_s / floor if floor else 0.0,
        f"{store}_requests": result["sent"],
        f"{store}_created": ok,
        f"{store}_not_created": result["other"],
        f"{store}_server_cpu_ms_per_item": result["server_cpu_s"] * per_item,
        f"{store}_client_cpu_ms_per_item": result["client_cpu_s"] * per_item,
        f"{store}_machine_busy": result["machine_busy"],
        f"{store}_machine_context_switches_per_item": result["machine_switches"] / max(ok, 1),
    }
    if store == "postgresql":
        figures[f"{store}_postgres_cpu_ms_per_item"] = result["postgres_cpu_s"] * per_item
        figures[f"{store}_connections_opened"] = result["connections_opened"]
    if server_log:
        figures[f"{store}_server_log_tail"] = server_log.splitlines()[-5:]
    return figures


def report_lines(store: str, figures: dict[str, Any], plan: Plan) -> list[str]:
    f = {k.removeprefix(store + "_"): v for k, v in figures.items() if k.startswith(store + "_")}
    cpu = f"server {f['server_cpu_ms_per_item']:.2f}, client {f['client_cpu_ms_per_item']:.2f}"
    if "postgres_cpu_ms_per_item" in f:
        cpu += f", pooled postgres backends {f['postgres_cpu_ms_per_item']:.2f}"
    lines = [
        f"{store:>10}: {f['items_per_s']:7.1f} items/s (median of rounds"
        f" {', '.join(f'{r:.0f}' for r in f['round_items_per_s'])})   p50 {f['p50_ms']:6.1f} ms"
        f"   p99 {f['p99_ms']:6.1f} ms   raw floor {f['raw_items_per_s']:7.1f} items/s"
        f"   ratio {f['ratio']:.2f}",
        f"{'':>10}  {f['created']}/{plan.count} created in the measured run"
        f" ({f['requests']} sent); CPU ms per item: {cpu};"
        f" machine busy {f['machine_busy'] * 100:.0f}%,"
        f" {f['machine_context_switches_per_item']:.0f} context switches per item",
    ]
    if "connections_opened" in f:
        lines.append(
            f"{'':>10}  {f['connections_opened']} new database connections opened by the"
            " server during the measured run"
        )
    if f["not_created"]:
        lines.append(f"{'':>10}  NOT 201: {f['not_created']}")
    if "server_log_tail" in f:
        lines.append(f"{'':>10}  server log tail: {f['server_log_tail']}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 requests per store")
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main()
        return
    if args.floor:
        floor_main()
        return

    plan = QUICK if args.quick else FULL
    stores = STORES if args.store == "both" else (args.store,)
    clip = voice_clip()
    report: dict[str, Any] = {
        "bench": "ingest",
        "quick": args.quick,
        "warmup": plan.warmup,
        "requests": plan.count,
        "concurrency": CONCURRENCY,
        "server_workers": SERVER_WORKERS,
        "clip_bytes": len(clip),
        "client": "one separate process (asyncio + httpx) on the same 2-core machine",
        "floor": f"{FLOOR_PROCESSES} processes, per item: key INSERT+commit,"
        " new file write+fsync, item INSERT+commit",
    }
    started = time.perf_counter()
    print(
        f"ingest: {plan.count} voice uploads of {len(clip)} B per store after {plan.warmup}"
        f" warm-up, {CONCURRENCY} connections from one client process, {SERVER_WORKERS}"
        f" server workers, {os.cpu_count()} cores shared by client, server and database"
    )
    for store in stores:
        figures = bench_store(store, plan, clip)
        report.update(figures)
        for line in report_lines(store, figures, plan):
            print(line, flush=True)
    report["elapsed_s"] = time.perf_counter() - started
    report["goals"] = {"postgresql_items_per_s": GOAL_PG_ITEMS_PER_S}
    pg = report.get("postgresql_items_per_s")
    report["met"] = {"postgresql_items_per_s": None if pg is None else pg >= GOAL_PG_ITEMS_PER_S}
    if pg is None:
        report["note"] = "postgresql not measured in this run"
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}))


if __name__ == "__main__":
    main()
