"""Benchmark of the consent ledger's one question: single checks, freshness across
processes, and bulk checks, against a plain indexed SELECT.

Run as `.venv/bin/python bench/consent.py [--quick] [--store postgresql|sqlite]`
(PostgreSQL by default: two fresh databases, dropped at the end; SQLite: files in a
fresh folder). The ledger gets 100,000 profiles (quick: 10,000) in households of two
adults and two children, and 20 events each (2,000,000; quick 200,000) over ten
purposes (the five built-in and five more from a purposes file with notice version 3,
some purposes changed in versions 2 and 3, so stale grants abound): grants (65%) and
withdrawals at random times of the past year under notice versions 1-3. Rows are loaded
with COPY (PostgreSQL) or executemany (SQLite), then VACUUM ANALYZE.

Figures:
* single checks/s through the service call, `container.consent.allows(subject, purpose,
  now)`, one thread: warm (a working set of 20,000 pairs, checked again and again, the
  ingestion gate's pattern: the same devices' profiles) and cold (each pair's first
  check: every one reads the store). Beside them the baseline, measured in the same run:
  a plain indexed SELECT of the same row (`latest event of (household, profile, purpose)
  no later than now`) through psycopg (sqlite3), prepared, autocommit, one connection;
  and the ledger without its cache (`ConsentLedger(..., cache=None)`: a session and a
  SELECT per check, as before).
* freshness: a second process (this file with `--checker`) checks one pair in a tight
  loop while this one grants it and, once the other sees it allowed, withdraws it
  (`ledger.record` + commit: the commit returns once every checker has applied it). Every
  check the other process *began* after the withdrawal returned and answered "allowed"
  is a stale answer; also the time from the return to its first refusing answer
  (negative: it refused before the withdrawal returned), and the withdrawal's own time.
* bulk: `allows_many(every profile, ten purposes, now)`: 1,000,000 pairs (quick 100,000),
  median of three runs; and 2,000 random pairs compared with `decide`.

Goals (from the issue): >= 20,000 checks/s; 0 stale answers; bulk <= 2 s. The last line
printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/"
GOAL_CHECKS_PER_S = 20_000.0
GOAL_STALE = 0
GOAL_BULK_S = 2.0
EVENTS_PER_PROFILE = 20
WARM_PAIRS = 20_000
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"

PURPOSES = """
notice_version = 3

[purpose.storage]
title = "Keep recordings"
description = "Keep recordings."
adult_default = true

[purpose.precise_geolocation]
title = "Precise location"
description = "Keep precise locations."
adult_default = true
changed_in = 2

[purpose.human_review]
title = "Human review"
description = "Let a person review recordings."
adult_default = false

[purpose.model_training]
title = "Model training"
description = "Train models on recordings."
adult_default = false
changed_in = 3

[purpose.third_party_disclosure]
title = "Sharing"
description = "Share with other companies."
adult_default = false
separate = true

[purpose.voice_commands]
title = "Voice commands"
description = "Understand spoken commands."
adult_default = true

[purpose.activity_summaries]
title = "Summaries"
description = "Weekly summaries of activity."
adult_default = true
changed_in = 2

[purpose.sound_alerts]
title = "Sound alerts"
description = "Alerts on unusual sounds."
adult_default = false

[purpose.product_research]
title = "Research"
description = "Research on how the product is used."
adult_default = false
changed_in = 2

[purpose.camera_snapshots]
title = "Snapshots"
description = "Keep camera snapshots."
adult_default = true
"""
NAMES = [
    "storage",
    "precise_geolocation",
    "human_review",
    "model_training",
    "third_party_disclosure",
    "voice_commands",
    "activity_summaries",
    "sound_alerts",
    "product_research",
    "camera_snapshots",
]


@dataclass(frozen=True)
class Plan:
    profiles: int
    single_checks: int
    warm_rounds: int
    trials: int


FULL = Plan(profiles=100_000, single_checks=20_000, warm_rounds=10, trials=200)
QUICK = Plan(profiles=10_000, single_checks=5_000, warm_rounds=5, trials=50)


# --- stores -----------------------------------------------------------------------------


@contextmanager
def databases(store: str) -> Iterator[dict[str, str]]:
    """Fresh main and key-store databases on PostgreSQL, dropped afterwards; none for SQLite."""
    if store != "postgresql":
        yield {}
        return
    names = [f"tutela_bench_consent_{os.getpid()}", f"tutela_bench_consent_{os.getpid()}_keys"]
    with psycopg.connect(PG_SERVER + "postgres", autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {"database_url": PG_SERVER + names[0], "keystore_url": PG_SERVER + names[1]}
    finally:
        with psycopg.connect(PG_SERVER + "postgres", autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the ledger's rows ----------------------------------------------------------------------


def load(store: str, url: str, plan: Plan, now: datetime, seed: int = 11) -> list[Any]:
    """Households, profiles and their events, in bulk; returns the subjects."""
    from tutela.consent.ledger import Subject

    rng = random.Random(seed)
    households = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(plan.profiles // 4)]
    subjects = [
        Subject(hh, uuid.UUID(int=rng.getrandbits(128)), "adult" if n < 2 else "child")
        for hh in households
        for n in range(4)
    ]
    year = 365 * 86400
    events = []
    for s in subjects:
        for _ in range(EVENTS_PER_PROFILE):
            at = now - timedelta(seconds=rng.random() * year)
            events.append(
                (
                    s.household_id,
                    uuid.UUID(int=rng.getrandbits(128)),
                    s.profile_id,
                    rng.choice(NAMES),
                    rng.random() < 0.65,
                    at,
                    rng.randint(1, 3),
                )
            )
    if store == "postgresql":
        _load_pg(url, households, subjects, events, now)
    else:
        _load_sqlite(url.removeprefix("sqlite:///"), households, subjects, events, now)
    return subjects


def _copy(conn: psycopg.Connection[Any], table: str, columns: str, lines: Iterator[str]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        buf = io.StringIO()
        for n, line in enumerate(lines):
            buf.write(line)
            if n % 50_000 == 49_999:
                copy.write(buf.getvalue())
                buf = io.StringIO()
        copy.write(buf.getvalue())


def _load_pg(
    url: str, households: list[uuid.UUID], subjects: list[Any], events: list[Any], now: datetime
) -> None:
    stamp = now.isoformat()
    with psycopg.connect(url) as conn:
        _copy(
            conn,
            "households",
            "id, created_at, state",
            (f"{hh}\t{stamp}\tactive\n" for hh in households),
        )
        _copy(
            conn,
            "profiles",
            "household_id, id, kind, name_sealed, created_at, last_active_at, state",
            (
                f"{s.household_id}\t{s.profile_id}\t{s.kind}\t\\\\x00\t{stamp}\t{stamp}\tactive\n"
                for s in subjects
            ),
        )
        _copy(
            conn,
            "consent_events",
            "household_id, id, profile_id, purpose, granted, at, actor, channel, method,"
            " notice_version",
            (
                f"{hh}\t{eid}\t{pid}\t{purpose}\t{'t' if granted else 'f'}\t{at.isoformat()}"
                f"\tsystem\tsystem\tcheckbox\t{version}\n"
                for hh, eid, pid, purpose, granted, at, version in events
            ),
        )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def _load_sqlite(
    path: str, households: list[uuid.UUID], subjects: list[Any], events: list[Any], now: datetime
) -> None:
    stamp = now.strftime(SQLITE_TIME)
    conn = sqlite3.connect(path, timeout=10.0)
    conn.executemany(
        "INSERT INTO households (id, created_at, state) VALUES (?, ?, 'active')",
        ((hh.hex, stamp) for hh in households),
    )
    conn.executemany(
        "INSERT INTO profiles (household_id, id, kind, name_sealed, created_at,"
        " last_active_at, state) VALUES (?, ?, ?, x'00', ?, ?, 'active')",
        ((s.household_id.hex, s.profile_id.hex, s.kind, stamp, stamp) for s in subjects),
    )
    conn.executemany(
        "INSERT INTO consent_events (household_id, id, profile_id, purpose, granted, at, actor,"
        " channel, method, notice_version) VALUES (?, ?, ?, ?, ?, ?, 'system', 'system',"
        " 'checkbox', ?)",
        (
            (hh.hex, eid.hex, pid.hex, purpose, int(granted), at.strftime(SQLITE_TIME), version)
            for hh, eid, pid, purpose, granted, at, version in events
        ),
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


# --- single checks ---------------------------------------------------------------------------


def baseline(store: str, url: str, pairs: list[tuple[Any, str]], now: datetime) -> float:
    """Checks/s of a plain prepared indexed SELECT of the same row, one connection."""
    sql = (
        "SELECT granted, notice_version, at FROM consent_events WHERE household_id = {p}"
        " AND profile_id = {p} AND purpose = {p} AND at <= {p} ORDER BY at DESC, id DESC LIMIT 1"
    )
    if store == "postgresql":
        with psycopg.connect(url, autocommit=True) as conn:
            q = sql.format(p="%s")
            started = time.perf_counter()
            for s, purpose in pairs:
                conn.execute(
                    q, (s.household_id, s.profile_id, purpose, now), prepare=True
                ).fetchone()
            return len(pairs) / (time.perf_counter() - started)
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    q = sql.format(p="?")
    at = now.strftime(SQLITE_TIME)
    started = time.perf_counter()
    for s, purpose in pairs:
        conn.execute(q, (s.household_id.hex, s.profile_id.hex, purpose, at)).fetchone()
    elapsed = time.perf_counter() - started
    conn.close()
    return len(pairs) / elapsed


def checks_per_s(ledger: Any, pairs: list[tuple[Any, str]], now: datetime) -> float:
    started = time.perf_counter()
    for subject, purpose in pairs:
        ledger.allows(subject, purpose, now)
    return len(pairs) / (time.perf_counter() - started)


# --- freshness: a second process -----------------------------------------------------------


def checker() -> None:
    """The second process: `watch hh pid kind purpose` checks that pair in a loop (once it
    is seen allowed); `stop T` ends the loop and reports on the checks begun after T."""
    from tutela.consent.ledger import Subject
    from tutela.container import build
    from tutela.settings import Settings

    container = build(Settings())
    cache = container.consent.cache
    if hasattr(cache, "wait_trusted"):
        cache.wait_trusted(10.0)
    print("ready", flush=True)
    samples: list[tuple[float, float, bool]] = []
    stop = threading.Event()
    loop: threading.Thread | None = None
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "watch":
            subject = Subject(uuid.UUID(args[0]), uuid.UUID(args[1]), args[2])
            purpose = args[3]
            waited = time.monotonic()
            while not container.consent.allows(subject, purpose, datetime.now(UTC)):
                time.sleep(0.0005)
            waited = time.monotonic() - waited
            samples, stop = [], threading.Event()

            def hammer(
                s: Any = subject,
                p: str = purpose,
                out: list[Any] = samples,
                flag: threading.Event = stop,
            ) -> None:
                while not flag.is_set():
                    began = time.monotonic()
                    allowed = container.consent.allows(s, p, datetime.now(UTC))
                    out.append((began, time.monotonic(), allowed))

            loop = threading.Thread(target=hammer)
            loop.start()
            print(f"allowed {waited * 1000:.3f}", flush=True)
        elif cmd == "stop":
            returned = float(args[0])
            stop.set()
            assert loop is not None
            loop.join()
            after = [s for s in samples if s[0] > returned]
            refused = [s[1] for s in samples if not s[2]]
            print(
                json.dumps(
                    {
                        "checks": len(samples),
                        "after": len(after),
                        "stale": sum(1 for s in after if s[2]),
                        "refused_after_ms": (min(refused) - returned) * 1000 if refused else None,
                    }
                ),
                flush=True,
            )
        elif cmd == "quit":
            break
    container.close()


def freshness(
    container: Any, env: dict[str, str], subjects: list[Any], plan: Plan
) -> dict[str, Any]:
    from tutela.consent.models import Channel, Method

    child = subprocess.Popen(
        [sys.executable, __file__, "--checker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    ledger = container.consent
    adults = [s for s in subjects if s.kind == "adult"]
    stale = checks = after = 0
    refused_ms: list[float] = []
    withdraw_ms: list[float] = []
    grant_seen_ms: list[float] = []
    try:
        for n in range(plan.trials):
            subject = adults[n]
            for granted in (True, False):
                with container.stores.session() as session:
                    ledger.record(
                        session,
                        subject,
                        {"human_review": granted},
                        actor="system",
                        channel=Channel.SYSTEM,
                        method=Method.CHECKBOX,
                        notice_version=3,
                        now=datetime.now(UTC),
                    )
                    began = time.monotonic()
                    session.commit()
                    returned = time.monotonic()
                if granted:
                    child.stdin.write(
                        f"watch {subject.household_id} {subject.profile_id} adult human_review\n"
                    )
                    child.stdin.flush()
                    grant_seen_ms.append(float(child.stdout.readline().split()[1]))
                    time.sleep(0.01)  # the other process answers from its cache meanwhile
            withdraw_ms.append((returned - began) * 1000)
            time.sleep(0.01)
            child.stdin.write(f"stop {returned!r}\n")
            child.stdin.flush()
            result = json.loads(child.stdout.readline())
            stale += result["stale"]
            checks += result["checks"]
            after += result["after"]
            if result["refused_after_ms"] is not None:
                refused_ms.append(result["refused_after_ms"])
        child.stdin.write("quit\n")
        child.stdin.flush()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    return {
        "trials": plan.trials,
        "stale_answers": stale,
        "checks_by_other_process": checks,
        "checks_after_return": after,
        "refused_after_return_ms_p50": statistics.median(refused_ms),
        "refused_after_return_ms_max": max(refused_ms),
        "withdrawal_commit_ms_p50": statistics.median(withdraw_ms),
        "withdrawal_commit_ms_max": max(withdraw_ms),
        "grant_seen_after_ms_p50": statistics.median(grant_seen_ms),
    }


# --- bulk -------------------------------------------------------------------------------------


def bulk(container: Any, subjects: list[Any], now: datetime, rng: random.Random) -> dict[str, Any]:
    ledger = container.consent
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        allowed = ledger.allows_many(subjects, NAMES, now)
        runs.append(time.perf_counter() - started)
    mismatches = 0
    for _ in range(2000):
        s, purpose = rng.choice(subjects), rng.choice(NAMES)
        with container.stores.session() as session:
            single = ledger.decide(s, purpose, now, session=session).allowed
        mismatches += single != ((s.profile_id, purpose) in allowed)
    return {
        "bulk_pairs": len(subjects) * len(NAMES),
        "bulk_allowed": len(allowed),
        "bulk_s": statistics.median(runs),
        "bulk_runs_s": runs,
        "bulk_mismatches_of_2000": mismatches,
    }


def bench_store(store: str, plan: Plan) -> dict[str, Any]:
    from tutela.consent.ledger import ConsentLedger
    from tutela.container import build
    from tutela.db import migrate
    from tutela.settings import Settings

    work = Path(tempfile.mkdtemp(prefix=f"tutela-bench-consent-{store}-", dir="/tmp"))
    purposes = work / "purposes.toml"
    purposes.write_text(PURPOSES, encoding="utf-8")
    figures: dict[str, Any] = {"store": store}
    with databases(store) as urls:
        settings = Settings(
            home=work / "home", log_level="WARNING", consent_purposes_file=purposes, **urls
        )
        migrate.upgrade(settings.main_url, settings.keys_url)
        now = datetime.now(UTC)
        started = time.perf_counter()
        subjects = load(store, settings.main_url, plan, now)
        figures["profiles"] = len(subjects)
        figures["events"] = len(subjects) * EVENTS_PER_PROFILE
        figures["load_s"] = time.perf_counter() - started
        print(
            f"{store}: {len(subjects):,} profiles, {figures['events']:,} events loaded in"
            f" {figures['load_s']:.1f} s",
            flush=True,
        )
        container = build(settings)
        try:
            rng = random.Random(5)
            cold = [(rng.choice(subjects), rng.choice(NAMES)) for _ in range(plan.single_checks)]
            warm_set = [(rng.choice(subjects), rng.choice(NAMES)) for _ in range(WARM_PAIRS)]
            warm = [rng.choice(warm_set) for _ in range(WARM_PAIRS * plan.warm_rounds)]
            plain = ConsentLedger(container.stores.session, container.consent.catalogue)
            cache = container.consent.cache
            if hasattr(cache, "wait_trusted"):
                cache.wait_trusted(10.0)
            checks_per_s(plain, cold[:500], now)  # warm the pool and the statements
            baseline(store, settings.main_url, cold[:500], now)
            figures["baseline_select_per_s"] = baseline(store, settings.main_url, cold, now)
            figures["plain_service_checks_per_s"] = checks_per_s(plain, cold, now)
            figures["cold_checks_per_s"] = checks_per_s(container.consent, cold, now)
            checks_per_s(container.consent, warm_set, now)
            figures["checks_per_s"] = checks_per_s(container.consent, warm, now)
            figures["ratio"] = figures["checks_per_s"] / figures["baseline_select_per_s"]
            figures["ratio_cold"] = figures["cold_checks_per_s"] / figures["baseline_select_per_s"]
            print(
                f"  single checks/s: warm {figures['checks_per_s']:,.0f}, cold"
                f" {figures['cold_checks_per_s']:,.0f}; baseline SELECT"
                f" {figures['baseline_select_per_s']:,.0f} (ratio {figures['ratio']:.1f}, cold"
                f" {figures['ratio_cold']:.2f}); without the cache"
                f" {figures['plain_service_checks_per_s']:,.0f}",
                flush=True,
            )
            env = {
                "TUTELA_HOME": str(settings.home),
                "TUTELA_DATABASE_URL": settings.main_url,
                "TUTELA_KEYSTORE_URL": settings.keys_url,
                "TUTELA_CONSENT_PURPOSES_FILE": str(purposes),
                "TUTELA_LOG_LEVEL": "WARNING",
            }
            fresh = freshness(container, env, subjects, plan)
            figures.update(fresh)
            print(
                f"  freshness over {fresh['trials']} withdrawals: {fresh['stale_answers']} stale"
                f" answers of {fresh['checks_after_return']:,} checks begun after the return"
                f" ({fresh['checks_by_other_process']:,} in all); first refusal"
                f" {fresh['refused_after_return_ms_p50']:.2f} ms after the return (p50; max"
                f" {fresh['refused_after_return_ms_max']:.2f}); a withdrawal's commit"
                f" {fresh['withdrawal_commit_ms_p50']:.1f} ms (max"
                f" {fresh['withdrawal_commit_ms_max']:.1f}); a grant seen after"
                f" {fresh['grant_seen_after_ms_p50']:.1f} ms",
                flush=True,
            )
            many = bulk(container, subjects, now, rng)
            figures.update(many)
            print(
                f"  bulk: {many['bulk_pairs']:,} pairs in {many['bulk_s']:.2f} s (median of"
                f" {', '.join(f'{r:.2f}' for r in many['bulk_runs_s'])});"
                f" {many['bulk_allowed']:,} allowed; {many['bulk_mismatches_of_2000']}"
                " mismatches with decide() of 2,000",
                flush=True,
            )
        finally:
            container.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 profiles")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--checker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.checker:
        checker()
        return
    plan = QUICK if args.quick else FULL
    print(
        f"consent: {plan.profiles:,} profiles on {args.store}, {os.cpu_count()} cores", flush=True
    )
    report: dict[str, Any] = {"bench": "consent", "quick": args.quick}
    report.update(bench_store(args.store, plan))
    report["baseline"] = "a prepared indexed SELECT of the same row, one connection, autocommit"
    report["goals"] = {
        "checks_per_s_min": GOAL_CHECKS_PER_S,
        "stale_answers_max": GOAL_STALE,
        "bulk_s_max": GOAL_BULK_S,
    }
    report["met"] = {
        "checks_per_s": report["checks_per_s"] >= GOAL_CHECKS_PER_S,
        "stale_answers": report["stale_answers"] <= GOAL_STALE,
        "bulk_s": report["bulk_s"] <= GOAL_BULK_S,
        "bulk_matches_decide": report["bulk_mismatches_of_2000"] == 0,
    }
    if args.quick:
        report["note"] = "quick run: the bulk goal is set for 1,000,000 pairs, checked on 100,000"
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}))


if __name__ == "__main__":
    main()
