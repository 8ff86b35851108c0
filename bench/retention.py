"""Benchmark of the retention sweep and the erasures it requests, against a raw-delete floor.

Run as `.venv/bin/python bench/retention.py [--quick] [--store sqlite|postgresql|both]
[--households N] [--no-raw-scan] [--selection-only] [--choice-every N]`. For each store
it makes a fresh TUTELA_HOME (on PostgreSQL two fresh databases, the main one and the key
store, dropped at the end), runs the migrations and creates the population:

* 1,000 households (quick: 100; `--households` for another size), each made with
  `households.service.create_home`: an adult owner (an account with a known password)
  and a child, a voice device and a phone;
* 500 items per profile (quick: 100), 1,000,000 in all (quick: 20,000), half location
  batches and half transcripts, as rows with a sealed field and no blob (content MAC and
  sealed field random bytes of the real lengths, no source item), each with its item key
  row in the key store (60 random bytes, the length of a wrapped key). Rows and keys go in
  with bulk INSERTs (SQLAlchemy Core, so each column is stored as Tutela stores it);
* the adult of every 10th household (`--choice-every`, 0 for none) chose automatic
  deletion after 3 months for transcripts (`set_auto_delete`), so the rule's 730 days
  becomes 90 for that profile's transcripts;
* of them, 10% expired under the packaged retention policy (`load_policy()`: location 30
  days for adults and 7 for children, transcripts 730 and 90 days) or the choice, 50 per
  profile (quick: 10), captured 1 to 60 days past their effective maximum age (those of
  a choice stay within the rule's); every other item is captured at least a day within
  its effective age;
* as many "twin" rows (and keys) as expired ones, in the same profiles and of the same
  kinds but recent: what the raw floor deletes.

Measured per store first, with nothing else running:

0. the selection's plans at this size (`retention.sweep.explain_selection`), then the
   selection floor and the selection, alternately, 3 times each (medians reported, the
   first round warms the caches). The selection floor reads the expired rows with raw
   SQL (plain psycopg in autocommit, or sqlite3) in keyset pages of 1,000 through the
   same indexes, the columns a request needs and nothing checked: per (kind, subject)
   rule a walk of `ix_items_retention`, per choice a range of
   `ix_items_household_profile_captured`. The selection is `_Sweep.expire_items` in a
   dry run: the same reads, the per-batch checks (profiles, choices, sources, holds),
   counting, no requests. `--selection-only` stops here.

Then, in this order, while a reader (a separate process) signs in to the real
server (`tutela serve --workers 1` on loopback, on the same stores, with its embedded
worker off so only the bench sweeps and runs jobs) as the first household's owner and GETs
`/api/v1/items?limit=50` in a loop, pausing 20 ms between requests:

1. baseline reads: 10 s with nothing else running;
2. raw floor: the twins deleted by id, in batches of the sweep's size (1,000, ordered as
   the sweep orders its batches): per batch one `DELETE FROM items WHERE (household_id,
   id) IN (...)` and one `DELETE FROM item_keys WHERE (household_id, item_id) IN (...)`,
   each committed, with plain psycopg or sqlite3 (the same SQLite pragmas as Tutela);
   PostgreSQL is then vacuumed and analyzed, so the sweep meets no dead rows;
3. engine: `retention.sweep.run_sweep(container, now=NOW)` then
   `container.erasure.run_pending(limit=1)` in a loop until every request it made is completed
   (remnant check included); items/s is expired items over that whole time. Each step
   function's time is added up over all requests (the engine's step table is wrapped).
   After `--limit-s` (default 1800 s, quick 300 s) the erasures stop and the rest is
   projected at the rate reached (items erased so far over the time spent on them);
   the report says so. On SQLite the remnant check reads both database files whole for
   every request, so there a full-size run cannot finish in hours (see the docs).

Goals (from the issue): engine time <= 1.5x the floor's; p99 of the reads during the
sweep and its erasures <= 50 ms; the same ratios at 2,000,000 items (`--households
2000`); no plan of the selection reads `items` whole. The last line printed is one JSON
object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/"
STORES = ("sqlite", "postgresql")
GOAL_RATIO = 1.5
GOAL_P99_MS = 50.0
PASSWORD = "bench horse battery staple"  # noqa: S105 (a throw-away bench account)
BATCH = 1000
READ_PAUSE_S = 0.02
BASELINE_S = 10.0
ROUNDS = 3
INSERT_CHUNK = 5000
KINDS = ("location", "transcript")
MEDIA = {"location": "application/json", "transcript": "text/plain"}
DEVICE = {"location": "phone", "transcript": "voice"}


@dataclass(frozen=True)
class Plan:
    households: int
    per_profile: int
    expired_per_profile: int
    choice_every: int = 10
    """Every this many households, the adult chose 3 months for transcripts (0: none)."""

    @property
    def items(self) -> int:
        return self.households * 2 * self.per_profile

    @property
    def expired(self) -> int:
        return self.households * 2 * self.expired_per_profile


FULL = Plan(households=1000, per_profile=500, expired_per_profile=50)
QUICK = Plan(households=100, per_profile=100, expired_per_profile=10)


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


# --- stores ---------------------------------------------------------------------------------


@contextmanager
def databases(store: str) -> Iterator[dict[str, str]]:
    """Fresh main and key-store databases on PostgreSQL, dropped afterwards; none for SQLite."""
    if store != "postgresql":
        yield {}
        return
    names = [f"tutela_bench_retention_{os.getpid()}", f"tutela_bench_retention_{os.getpid()}_keys"]
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


def settle(store: str, settings: Any) -> None:
    """Fresh planner statistics and no dead rows on PostgreSQL; data on disk everywhere."""
    if store == "postgresql":
        for url in (settings.main_url, settings.keys_url):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
                conn.execute("CHECKPOINT")
    else:
        for url in (settings.main_url, settings.keys_url):
            conn = sqlite_connect(url.removeprefix("sqlite:///"))
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
    os.sync()


def db_size(store: str, url: str) -> int:
    """Bytes of a database: the SQLite file (and its WAL), or pg_database_size."""
    if store == "postgresql":
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0
    path = Path(url.removeprefix("sqlite:///"))
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


# --- population -----------------------------------------------------------------------------


@dataclass
class Population:
    owner_email: str
    homes_s: float = 0.0
    expired: int = 0
    expired_by_choice: int = 0
    rows: int = 0
    # (household_id, profile_id, kind, choice) of each auto-delete choice made.
    choices: list[tuple[uuid.UUID, uuid.UUID, str, str]] = field(default_factory=list)
    # (subject, kind, household_id, item_id) of each twin: what the floor deletes.
    twins: list[tuple[str, str, uuid.UUID, uuid.UUID]] = field(default_factory=list)


def make_homes(container: Any, plan: Plan) -> list[tuple[uuid.UUID, dict[str, Any]]]:
    """The households, through the real service; per home its profiles and devices."""
    from sqlalchemy import select

    from tutela.households.models import AccountRole, Device
    from tutela.households.service import AdultSpec, ChildSpec, DeviceSpec, HomeSpec, create_home

    password_hash = container.hasher.hash(PASSWORD)  # one hash for every bench account
    now = container.clock.now() - timedelta(days=1000)  # older than any item
    homes = []
    for n in range(plan.households):
        email = f"owner{n}@bench.tutela.test"
        spec = HomeSpec(
            adults=(AdultSpec(f"Owner {n}", email, password_hash, AccountRole.OWNER),),
            children=(ChildSpec(f"Child {n}", date(2016 + n % 8, 1 + n % 12, 1), (email,)),),
            devices=(DeviceSpec("voice", "Kitchen speaker"), DeviceSpec("phone", "Phone")),
        )
        with container.stores.session() as session:
            home = create_home(session, container.vault.keys, spec=spec, now=now)
            devices = {
                d.kind: d.id
                for d in session.scalars(
                    select(Device).where(Device.household_id == home.household_id)
                )
            }
        homes.append(
            (
                home.household_id,
                {
                    "adult": next(iter(home.adult_profiles.values())),
                    "child": home.child_profiles[0],
                    "devices": devices,
                },
            )
        )
    return homes


def populate(container: Any, plan: Plan, now: datetime, seed: int = 11) -> Population:
    """Households through the service; items and item keys by bulk INSERT."""
    from sqlalchemy import Table, insert

    from tutela.core.ids import uuid7
    from tutela.retention.policy import AUTO_DELETE_CHOICES, load_policy
    from tutela.retention.service import set_auto_delete
    from tutela.vault.models import ItemKey, MediaItem

    policy = load_policy()
    rng = random.Random(seed)
    started = time.perf_counter()
    homes = make_homes(container, plan)
    population = Population(owner_email="owner0@bench.tutela.test")
    if plan.choice_every:
        with container.stores.session() as session:
            for household_id, home in homes[:: plan.choice_every]:
                set_auto_delete(
                    session,
                    household_id=household_id,
                    profile_id=home["adult"],
                    kind="transcript",
                    choice="3m",
                    actor="bench",
                    now=now - timedelta(days=1000),
                )
                population.choices.append((household_id, home["adult"], "transcript", "3m"))
    chosen = {(c[0], c[1], c[2]): AUTO_DELETE_CHOICES[c[3]] for c in population.choices}
    population.homes_s = time.perf_counter() - started
    items_table, keys_table = MediaItem.__table__, ItemKey.__table__
    assert isinstance(items_table, Table)
    assert isinstance(keys_table, Table)
    items: list[dict[str, Any]] = []
    keys: list[dict[str, Any]] = []

    def flush(final: bool = False) -> None:
        if len(items) < INSERT_CHUNK and not final:
            return
        if items:
            with container.stores.session() as session:
                session.execute(insert(items_table), items)
                session.commit()
            with container.stores.key_sessions() as ks:
                ks.execute(insert(keys_table), keys)
                ks.commit()
        population.rows += len(items)
        items.clear()
        keys.clear()

    for household_id, home in homes:
        for subject in ("adult", "child"):
            profile_id = home[subject]
            # Expired, then their twins, then the live rest: as many of each kind.
            ages = ["expired"] * plan.expired_per_profile
            ages += ["twin"] * plan.expired_per_profile
            ages += ["live"] * (plan.per_profile - plan.expired_per_profile)
            for n, age in enumerate(ages):
                kind = KINDS[n % 2]
                rule_age = max_age = policy.max_age(kind, subject)
                by_choice = chosen.get((household_id, profile_id, kind))
                if by_choice is not None and by_choice < max_age:
                    max_age = by_choice  # past the choice's age, within the rule's
                if age == "expired":
                    past = max_age + timedelta(days=rng.uniform(1, 60))
                    if max_age < rule_age:
                        past = min(past, rule_age - timedelta(days=1))
                    captured = now - past
                else:
                    captured = now - timedelta(
                        seconds=rng.uniform(3600, (max_age - timedelta(days=1)).total_seconds())
                    )
                item_id = uuid7()
                plain = rng.randint(80, 400)
                items.append(
                    {
                        "household_id": household_id,
                        "id": item_id,
                        "profile_id": profile_id,
                        "device_id": home["devices"][DEVICE[kind]],
                        "source_item_id": None,
                        "kind": kind,
                        "subject_class": subject,
                        "media_type": MEDIA[kind],
                        "captured_at": captured,
                        "received_at": captured + timedelta(seconds=10),
                        "size": plain,
                        "content_mac": os.urandom(32),
                        "blob_key": None,
                        "sealed_size": 0,
                        # The layout of crypto.seal: version, nonce, ciphertext, tag.
                        "sealed_fields": b"\x01" + os.urandom(12 + plain + 16),
                        "state": "active",
                    }
                )
                keys.append(
                    {
                        "household_id": household_id,
                        "item_id": item_id,
                        "profile_id": profile_id,
                        "wrapped": os.urandom(60),
                        "created_at": captured + timedelta(seconds=10),
                    }
                )
                if age == "expired":
                    population.expired += 1
                    population.expired_by_choice += max_age < rule_age
                elif age == "twin":
                    population.twins.append((subject, kind, household_id, item_id))
                flush()
    flush(final=True)
    return population


# --- the floor ------------------------------------------------------------------------------


def raw_floor(store: str, settings: Any, population: Population) -> dict[str, Any]:
    """The twins deleted by (household, id) in batches of BATCH: items, then their keys."""
    # The sweep's order: subject, kind, then (household, id).
    twins = sorted(population.twins, key=lambda t: (t[0], KINDS.index(t[1]), t[2], t[3]))
    if store == "postgresql":
        main: Any = psycopg.connect(settings.main_url)
        keys: Any = psycopg.connect(settings.keys_url)

        def delete(conn: Any, table: str, column: str, part: list[Any]) -> int:
            sql = (
                f"DELETE FROM {table} WHERE (household_id, {column}) IN"  # noqa: S608 (constants)
                " (SELECT * FROM unnest(%s::uuid[], %s::uuid[]))"
            )
            count: int = conn.execute(sql, ([t[2] for t in part], [t[3] for t in part])).rowcount
            return count
    else:
        main = sqlite_connect(settings.main_url.removeprefix("sqlite:///"))
        keys = sqlite_connect(settings.keys_url.removeprefix("sqlite:///"))

        def delete(conn: Any, table: str, column: str, part: list[Any]) -> int:
            # A row-value IN over a VALUES subquery: SQLite then searches the primary key
            # for each pair (a bare `IN (VALUES ...)` scans the whole table).
            values = ",".join("(?,?)" for _ in part)
            sql = (
                f"DELETE FROM {table} WHERE (household_id, {column}) IN"  # noqa: S608 (constants)
                f" (SELECT column1, column2 FROM (VALUES {values}))"
            )
            # SQLAlchemy's Uuid keeps a UUID as 32 hex digits on SQLite.
            args = [v for t in part for v in (t[2].hex, t[3].hex)]
            count: int = conn.execute(sql, args).rowcount
            return count

    rows = key_rows = 0
    items_s = keys_s = 0.0
    try:
        started = time.perf_counter()
        for at in range(0, len(twins), BATCH):
            part = twins[at : at + BATCH]
            t0 = time.perf_counter()
            rows += delete(main, "items", "id", part)
            main.commit()
            t1 = time.perf_counter()
            key_rows += delete(keys, "item_keys", "item_id", part)
            keys.commit()
            items_s += t1 - t0
            keys_s += time.perf_counter() - t1
        elapsed = time.perf_counter() - started
    finally:
        main.close()
        keys.close()
    if rows != len(twins) or key_rows != len(twins):
        raise RuntimeError(f"the floor deleted {rows} rows and {key_rows} keys of {len(twins)}")
    return {
        "floor_s": elapsed,
        "floor_items_s": items_s,
        "floor_keys_s": keys_s,
        "floor_items_per_s": len(twins) / elapsed,
        "floor_batches": math.ceil(len(twins) / BATCH),
    }


# --- the selection and its floor ------------------------------------------------------------


def sqlite_stamp(at: datetime) -> str:
    """A time as SQLAlchemy keeps it on SQLite: naive UTC with microseconds."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def selection_floor(
    store: str, settings: Any, now: datetime, population: Population
) -> tuple[float, int]:
    """The expired rows read with raw SQL through the same indexes, in pages of BATCH, the
    columns a request needs and nothing checked: per (kind, subject) rule a keyset walk of
    `ix_items_retention`, and per choice a range of `ix_items_household_profile_captured`
    (plain psycopg in autocommit, or sqlite3). Returns (seconds, rows)."""
    from tutela.retention.policy import AUTO_DELETE_CHOICES, load_policy

    policy = load_policy()
    pg = store == "postgresql"
    conn: Any = (
        psycopg.connect(settings.main_url, autocommit=True)
        if pg
        else sqlite_connect(settings.main_url.removeprefix("sqlite:///"))
    )
    m = "%s" if pg else "?"

    def ident(value: uuid.UUID) -> Any:
        return value if pg else value.hex

    def stamp(at: datetime) -> Any:
        return at if pg else sqlite_stamp(at)

    columns = "household_id, id, profile_id, captured_at"
    rule_sql = (
        f"SELECT {columns} FROM items WHERE kind = {m} AND subject_class = {m}"  # noqa: S608
        f" AND captured_at < {m} AND state = 'active'{{after}}"
        f" ORDER BY captured_at, household_id, id LIMIT {BATCH}"
    )
    rule_after = f" AND (captured_at, household_id, id) > ({m}, {m}, {m})"
    choice_sql = (
        f"SELECT {columns} FROM items WHERE household_id = {m} AND profile_id = {m}"  # noqa: S608
        f" AND captured_at >= {m} AND captured_at < {m} AND kind = {m} AND state = 'active'"
        f"{{after}} ORDER BY captured_at, id LIMIT {BATCH}"
    )
    choice_after = f" AND (captured_at > {m} OR (captured_at = {m} AND id > {m}))"
    rows = 0
    try:
        started = time.perf_counter()
        for kind, subject in policy.rules:
            args: list[Any] = [
                kind.value,
                subject.value,
                stamp(now - policy.max_age(kind, subject)),
            ]
            page = conn.execute(rule_sql.format(after=""), args).fetchall()
            while page:
                rows += len(page)
                if len(page) < BATCH:
                    break
                last = page[-1]
                page = conn.execute(
                    rule_sql.format(after=rule_after), [*args, last[3], last[0], last[1]]
                ).fetchall()
        for household_id, profile_id, kind, choice in population.choices:
            # Every profile the bench gives a choice to is an adult's.
            rule = policy.max_age(kind, "adult")
            chosen = AUTO_DELETE_CHOICES[choice]
            if chosen is None or chosen >= rule:
                continue
            args = [ident(household_id), ident(profile_id), stamp(now - rule)]
            args += [stamp(now - chosen), kind]
            page = conn.execute(choice_sql.format(after=""), args).fetchall()
            while page:
                rows += len(page)
                if len(page) < BATCH:
                    break
                last = page[-1]
                page = conn.execute(
                    choice_sql.format(after=choice_after), [*args, last[3], last[3], last[1]]
                ).fetchall()
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    return elapsed, rows


def selection(container: Any, now: datetime) -> tuple[float, int]:
    """The sweep's selection alone (`_Sweep.expire_items` in a dry run: it reads, checks and
    counts every expired item and requests nothing). Returns (seconds, items found)."""
    from tutela.retention.sweep import SweepReport, _Sweep

    report = SweepReport(dry_run=True)
    sweep = _Sweep(container, container.policy, report, now, BATCH, True)
    started = time.perf_counter()
    sweep.expire_items(None)
    return time.perf_counter() - started, report.expired_items


def reads_items_whole(store: str, plan: list[str]) -> bool:
    """A plan step that reads `items` whole: SQLite's SCAN, PostgreSQL's Seq Scan, or an
    index scan on it without an Index Cond (a walk of the whole index)."""
    if store == "sqlite":
        return any(line.startswith("SCAN items") for line in plan)
    for at, line in enumerate(plan):
        if "Seq Scan on items" in line:
            return True
        if " on items" in line and "Index" in line and "Scan" in line:
            depth = len(line) - len(line.lstrip(" ->"))
            block = []
            for below in plan[at + 1 :]:
                if "->" in below or len(below) - len(below.lstrip()) <= depth:
                    break
                block.append(below)
            if not any("Index Cond" in b for b in block):
                return True
    return False


def measure_selection(
    store: str, settings: Any, container: Any, now: datetime, population: Population
) -> dict[str, Any]:
    """The selection's plans at this size, then the floor and the selection, alternately,
    ROUNDS times each (the first round warms the caches); the medians are reported."""
    from tutela.retention.sweep import explain_selection
    from tutela.vault.models import ItemKind

    with container.stores.main.connect() as conn:
        # Transcripts: a kind this population has, with a choice that shortens its rule.
        plans = explain_selection(
            conn, container.policy, now, batch_size=BATCH, kind=ItemKind.TRANSCRIPT
        )
        conn.rollback()
    floors, selections, floor_cpu, selection_cpu = [], [], [], []
    found = floor_rows = 0
    for _ in range(ROUNDS):
        cpu = time.process_time()
        took, floor_rows = selection_floor(store, settings, now, population)
        floor_cpu.append(time.process_time() - cpu)
        floors.append(took)
        cpu = time.process_time()
        took, found = selection(container, now)
        selection_cpu.append(time.process_time() - cpu)
        selections.append(took)
    floor_s, selection_s = sorted(floors)[ROUNDS // 2], sorted(selections)[ROUNDS // 2]
    if floor_rows != population.expired:
        raise RuntimeError(f"the selection floor read {floor_rows} rows of {population.expired}")
    return {
        "plans": plans,
        "plans_read_items_whole": sorted(
            n for n, p in plans.items() if reads_items_whole(store, p)
        ),
        "selection_s": selection_s,
        "selection_runs_s": [round(t, 3) for t in selections],
        "selection_found": found,
        "selection_floor_s": floor_s,
        "selection_floor_runs_s": [round(t, 3) for t in floors],
        "selection_ratio": selection_s / floor_s,
        # This process's CPU time (on SQLite the database's work too): steadier than wall
        # time on a machine shared with other work.
        "selection_cpu_s": sorted(selection_cpu)[ROUNDS // 2],
        "selection_floor_cpu_s": sorted(floor_cpu)[ROUNDS // 2],
    }


# --- the engine -----------------------------------------------------------------------------


def time_steps(engine: Any) -> dict[str, float]:
    """Wrap each step function of the engine's step table to add up its own time (s)."""
    spent: dict[str, float] = {}

    def timed(step: str, run: Callable[[Any, Any], str]) -> Callable[[Any, Any], str]:
        def wrapper(erasure: Any, job: Any) -> str:
            started = time.perf_counter()
            try:
                return run(erasure, job)
            finally:
                spent[step] = spent.get(step, 0.0) + time.perf_counter() - started

        return wrapper

    for step, run in list(engine.step_functions.items()):
        engine.step_functions[step] = timed(step.value, run)
    return spent


def statuses(container: Any, ids: list[uuid.UUID]) -> dict[str, int]:
    from sqlalchemy import func, select

    from tutela.erasure.models import ErasureRequest

    found: dict[str, int] = {}
    with container.stores.session() as session:
        for at in range(0, len(ids), 500):
            for status, count in session.execute(
                select(ErasureRequest.status, func.count())
                .where(ErasureRequest.id.in_(ids[at : at + 500]))
                .group_by(ErasureRequest.status)
            ):
                found[status] = found.get(status, 0) + count
    return found


def sweep_and_erase(
    container: Any, now: datetime, limit_s: float, progress: Callable[[str], None]
) -> dict[str, Any]:
    """The sweep, then worker passes until every request it made is completed."""
    from tutela.retention.sweep import run_sweep

    spent = time_steps(container.erasure)
    started = time.perf_counter()
    report = run_sweep(container, now=now, batch_size=BATCH)
    swept = time.perf_counter()
    progress(
        f"sweep: {report.expired_items} expired items, {len(report.requests)} requests"
        f" in {swept - started:.1f} s"
    )
    passes = completed = failed = waiting = 0
    truncated = False
    deadline = started + limit_s
    last_note = swept
    while True:
        # One job per call, so the time limit is looked at between jobs.
        done = container.erasure.run_pending(limit=1)
        passes += 1
        completed += done.completed
        failed += done.failed
        waiting += done.waiting
        if done.completed + done.advanced + done.waiting + done.failed == 0:
            state = statuses(container, report.requests)
            if state.get("completed", 0) == len(report.requests):
                break
            if set(state) & {"failed", "blocked"}:
                raise RuntimeError(f"erasures ended {state}")
            time.sleep(0.5)  # a job waiting for its retry time
        now_s = time.perf_counter()
        if now_s > deadline:
            truncated = True
            progress(f"time limit: stopped after {completed} of {len(report.requests)} requests")
            break
        if now_s - last_note > 30:
            progress(f"erasures: {completed} of {len(report.requests)} completed")
            last_note = now_s
    finished = time.perf_counter()
    return {
        "expired_items": report.expired_items,
        "held": report.held,
        "requests": len(report.requests),
        "sweep_s": swept - started,
        "erasures_s": finished - swept,
        "engine_s": finished - started,
        "engine_items_per_s": report.expired_items / (finished - started),
        "worker_passes": passes,
        "jobs_waited": waiting,
        "jobs_failed": failed,
        "requests_completed": completed,
        "truncated": truncated,
        "step_s": {k: round(v, 2) for k, v in spent.items()},
    }


# --- the server and the reader --------------------------------------------------------------


@contextmanager
def server(env: dict[str, str], work: Path) -> Iterator[str]:
    """`tutela serve --workers 1` in its own process group, killed (group-wide) at the end."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "tutela"), "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
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
        yield base_url
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


def reader_main() -> None:
    """The reader process: sign in, say ready, GET the items page until told to stop."""
    config = json.loads(sys.stdin.readline())
    with httpx.Client(base_url=config["base_url"], timeout=30.0) as client:
        answer = client.post(
            "/api/v1/auth/token", json={"email": config["email"], "password": PASSWORD}
        )
        if answer.status_code != 201 or not answer.json().get("token"):
            raise RuntimeError(f"sign-in answered {answer.status_code}: {answer.text[:200]}")
        headers = {"authorization": "Bearer " + answer.json()["token"]}
        for _ in range(5):  # warm the route
            client.get("/api/v1/items", params={"limit": 50}, headers=headers)
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
        print("ready", flush=True)
        samples: list[tuple[float, float, int, int]] = []
        while not stop.is_set():
            at = time.time()
            started = time.perf_counter()
            try:
                page = client.get("/api/v1/items", params={"limit": 50}, headers=headers)
                status, count = page.status_code, len(page.json().get("items", []))
            except httpx.HTTPError:
                status, count = 0, 0
            samples.append((at, (time.perf_counter() - started) * 1000, status, count))
            stop.wait(READ_PAUSE_S)
    print(json.dumps(samples), flush=True)


@contextmanager
def reader(base_url: str, email: str) -> Iterator[Callable[[], list[list[float]]]]:
    """A running reader process; the yielded function stops it and returns its samples."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--reader"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"base_url": base_url, "email": email}) + "\n")
    proc.stdin.flush()
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("the reader did not sign in")

    def stop() -> list[list[float]]:
        out, _ = proc.communicate("stop\n", timeout=120)
        samples: list[list[float]] = json.loads(out.strip().splitlines()[-1])
        return samples

    try:
        yield stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def read_figures(samples: list[list[float]], start: float, end: float) -> dict[str, Any]:
    inside = [s for s in samples if start <= s[0] < end]
    ok = [s[1] for s in inside if s[2] == 200]
    return {
        "reads": len(inside),
        "reads_not_ok": len(inside) - len(ok),
        "p50_ms": percentile(ok, 0.50),
        "p99_ms": percentile(ok, 0.99),
        "max_ms": max(ok, default=0.0),
        "items_seen_last": int(inside[-1][3]) if inside else 0,
    }


# --- one store ------------------------------------------------------------------------------


def bench_store(
    store: str, plan: Plan, raw_scan: bool, limit_s: float, selection_only: bool = False
) -> dict[str, Any]:
    from sqlalchemy import func, select

    from tutela.container import build
    from tutela.db import migrate
    from tutela.settings import Settings
    from tutela.vault.models import ItemKey, MediaItem

    def progress(line: str) -> None:
        print(f"{store:>10}  {line}", flush=True)

    work = Path(tempfile.mkdtemp(prefix=f"tutela-bench-retention-{store}-", dir="/tmp"))
    figures: dict[str, Any] = {}
    try:
        with databases(store) as db_env:
            env = {
                "TUTELA_HOME": str(work / "home"),
                "TUTELA_BLOB_STORE": "local",
                "TUTELA_LOG_LEVEL": "WARNING",
                "TUTELA_EMBEDDED_WORKER": "false",
                "TUTELA_MFA_REQUIRED_FOR_CAMERA_VIEWERS": "false",
                "TUTELA_ERASURE_RAW_SCAN": "true" if raw_scan else "false",
                **db_env,
            }
            settings = Settings(**{k.removeprefix("TUTELA_").lower(): v for k, v in env.items()})
            migrate.upgrade(settings.main_url, settings.keys_url)
            container = build(settings)
            try:
                now = container.clock.now()
                started = time.perf_counter()
                population = populate(container, plan, now)
                settle(store, settings)
                figures["populate_s"] = time.perf_counter() - started
                figures["populate_homes_s"] = population.homes_s
                figures["rows_inserted"] = population.rows
                figures["main_db_bytes"] = db_size(store, settings.main_url)
                figures["keys_db_bytes"] = db_size(store, settings.keys_url)
                figures["expired_by_choice"] = population.expired_by_choice
                figures["choices"] = len(population.choices)
                progress(
                    f"populated {population.rows} items ({population.expired} expired,"
                    f" {population.expired_by_choice} of them by {len(population.choices)}"
                    f" choices; {len(population.twins)} twins for the floor) in"
                    f" {figures['populate_s']:.0f} s (homes {population.homes_s:.0f} s); main store"
                    f" {figures['main_db_bytes'] / 2**20:.0f} MiB, key store"
                    f" {figures['keys_db_bytes'] / 2**20:.0f} MiB"
                )
                container.policy  # noqa: B018  (loaded once per process, as in a worker)
                figures.update(measure_selection(store, settings, container, now, population))
                progress(
                    f"selection: {figures['selection_found']} items in"
                    f" {figures['selection_s']:.2f} s, floor {figures['selection_floor_s']:.2f} s"
                    f" (ratio {figures['selection_ratio']:.2f});"
                    f" plans reading items whole: {figures['plans_read_items_whole'] or 'none'}"
                )
                if selection_only:
                    return {f"{store}_{k}": v for k, v in figures.items()}
                with (
                    server(env, work) as base_url,
                    reader(base_url, population.owner_email) as stop,
                ):
                    t_base = time.time()
                    time.sleep(BASELINE_S)
                    t_floor = time.time()
                    figures.update(raw_floor(store, settings, population))
                    t_floor_end = time.time()
                    progress(f"floor: {len(population.twins)} rows in {figures['floor_s']:.1f} s")
                    settle(store, settings)
                    t_engine = time.time()
                    figures.update(sweep_and_erase(container, now, limit_s, progress))
                    t_end = time.time()
                    samples = stop()
                server_log = (work / "server.log").read_text(errors="replace").strip()
                for phase, (a, b) in {
                    "idle": (t_base, t_floor),
                    "floor": (t_floor, t_floor_end),
                    "sweep": (t_engine, t_end),
                }.items():
                    for k, v in read_figures(samples, a, b).items():
                        figures[f"read_{phase}_{k}"] = v
                with container.stores.session() as session:
                    left = session.scalar(select(func.count()).select_from(MediaItem))
                with container.stores.key_sessions() as ks:
                    keys_left = ks.scalar(select(func.count()).select_from(ItemKey))
                figures["items_left"] = left
                figures["item_keys_left"] = keys_left
            finally:
                container.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if figures["selection_found"] != population.expired:
        raise RuntimeError(
            f"the selection found {figures['selection_found']} items of {population.expired}"
        )
    if figures["expired_items"] != population.expired:
        raise RuntimeError(
            f"the sweep found {figures['expired_items']} expired items of {population.expired}"
        )
    erased = plan.items - left
    if left != keys_left:
        raise RuntimeError(f"{left} items but {keys_left} item keys left")
    if figures["truncated"]:
        # Stopped at the time limit: the rest is projected at the rate reached so far.
        figures["items_erased"] = erased
        figures["engine_s_measured"] = figures["engine_s"]
        figures["engine_s"] = figures["sweep_s"] + figures["erasures_s"] * (
            population.expired / max(erased, 1)
        )
        figures["engine_items_per_s"] = population.expired / figures["engine_s"]
    elif erased != population.expired:
        raise RuntimeError(f"{erased} items erased, {population.expired} expected")
    figures["ratio"] = figures["engine_s"] / figures["floor_s"]
    figures["selection_to_raw_floor"] = figures["selection_s"] / figures["floor_s"]
    if server_log:
        figures["server_log_tail"] = server_log.splitlines()[-5:]
    return {f"{store}_{k}": v for k, v in figures.items()}


def selection_lines(store: str, f: dict[str, Any]) -> list[str]:
    lines = [
        f"{store:>10}: selection {f['selection_s']:.2f} s for {f['selection_found']} items"
        f" ({f['expired_by_choice']} by {f['choices']} choices; runs"
        f" {', '.join(f'{t:.2f}' for t in f['selection_runs_s'])})   selection floor"
        f" {f['selection_floor_s']:.2f} s (runs"
        f" {', '.join(f'{t:.2f}' for t in f['selection_floor_runs_s'])})   ratio"
        f" {f['selection_ratio']:.2f}   (CPU of this process: {f['selection_cpu_s']:.2f} s"
        f" and {f['selection_floor_cpu_s']:.2f} s)"
        + (
            f"   selection / raw delete floor {f['selection_to_raw_floor']:.2f}"
            if "selection_to_raw_floor" in f
            else ""
        ),
        f"{'':>10}  plans reading items whole: {f['plans_read_items_whole'] or 'none'}",
    ]
    for name, plan in f["plans"].items():
        lines.append(f"{'':>10}  plan of {name}:")
        lines += [f"{'':>12}{line}" for line in plan]
    return lines


def report_lines(store: str, figures: dict[str, Any]) -> list[str]:
    f = {k.removeprefix(store + "_"): v for k, v in figures.items() if k.startswith(store + "_")}
    if "engine_s" not in f:
        return selection_lines(store, f)
    steps = ", ".join(f"{k} {v:.1f}" for k, v in f["step_s"].items())
    lines = [
        *selection_lines(store, f),
        f"{store:>10}: sweep + erasures {f['engine_s']:.1f} s for {f['expired_items']} items"
        f" ({f['engine_items_per_s']:.0f} items/s; sweep {f['sweep_s']:.1f} s,"
        f" {f['requests']} requests run in {f['erasures_s']:.1f} s)   raw floor"
        f" {f['floor_s']:.1f} s ({f['floor_items_per_s']:.0f} items/s; items"
        f" {f['floor_items_s']:.1f} s, keys {f['floor_keys_s']:.1f} s)   ratio"
        f" {f['ratio']:.1f}   goal <= {GOAL_RATIO}",
        *(
            [
                f"{'':>10}  STOPPED at the time limit after {f['engine_s_measured']:.0f} s:"
                f" {f['requests_completed']} of {f['requests']} requests completed,"
                f" {f['items_erased']} items erased; engine time projected at that rate"
            ]
            if f["truncated"]
            else []
        ),
        f"{'':>10}  engine steps, s (all requests): {steps}",
    ]
    for phase in ("idle", "floor", "sweep"):
        lines.append(
            f"{'':>10}  reads {phase:>5}: {f[f'read_{phase}_reads']} GETs,"
            f" p50 {f[f'read_{phase}_p50_ms']:.1f} ms, p99 {f[f'read_{phase}_p99_ms']:.1f} ms,"
            f" max {f[f'read_{phase}_max_ms']:.0f} ms, not 200:"
            f" {f[f'read_{phase}_reads_not_ok']}"
            + (f"   goal p99 <= {GOAL_P99_MS:.0f} ms" if phase == "sweep" else "")
        )
    if "server_log_tail" in f:
        lines.append(f"{'':>10}  server log tail: {f['server_log_tail']}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 items, 2,000 expired")
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--households", type=int, help="households (2 profiles each)")
    parser.add_argument(
        "--no-raw-scan", action="store_true", help="erasure_raw_scan=False (default: True)"
    )
    parser.add_argument(
        "--limit-s",
        type=float,
        help="stop the erasures after this long and project the rest (default 1800, quick 300)",
    )
    parser.add_argument(
        "--selection-only",
        action="store_true",
        help="measure the selection against its floor only: no server, erasures or raw floor",
    )
    parser.add_argument(
        "--choice-every",
        type=int,
        default=10,
        help="every this many households the adult chose 3m for transcripts (0: none; 10)",
    )
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        reader_main()
        return

    plan = QUICK if args.quick else FULL
    plan = Plan(
        args.households or plan.households,
        plan.per_profile,
        plan.expired_per_profile,
        choice_every=args.choice_every,
    )
    stores = STORES if args.store == "both" else (args.store,)
    limit_s = args.limit_s or (300.0 if args.quick else 1800.0)
    report: dict[str, Any] = {
        "bench": "retention",
        "quick": args.quick,
        "households": plan.households,
        "items": plan.items,
        "expired": plan.expired,
        "batch_size": BATCH,
        "limit_s": limit_s,
        "selection_only": args.selection_only,
        "choice_every": plan.choice_every,
        "erasure_raw_scan": not args.no_raw_scan,
        "items_kind": "location and transcript rows with a sealed field, no blob",
        "floor": f"per batch of {BATCH}: one DELETE of items by (household_id, id) and one"
        " of item_keys, each committed",
        "selection_floor": f"raw SQL, pages of {BATCH}: per (kind, subject) a keyset walk of"
        " ix_items_retention, per choice a range of ix_items_household_profile_captured",
        "reader": f"one process, GET /api/v1/items?limit=50, {READ_PAUSE_S * 1000:.0f} ms"
        " between requests, against tutela serve --workers 1",
    }
    print(
        f"retention: {plan.items} items in {plan.households} households ({plan.expired}"
        f" expired) per store, batches of {BATCH}, erasure_raw_scan={not args.no_raw_scan},"
        f" {os.cpu_count()} cores shared by bench, server, reader and database",
        flush=True,
    )
    started = time.perf_counter()
    for store in stores:
        figures = bench_store(store, plan, not args.no_raw_scan, limit_s, args.selection_only)
        report.update(figures)
        for line in report_lines(store, figures):
            print(line, flush=True)
    report["elapsed_s"] = time.perf_counter() - started
    report["goals"] = {"ratio_max": GOAL_RATIO, "read_p99_ms_max": GOAL_P99_MS}
    report["met"] = {}
    for store in stores:
        report["met"][f"{store}_plans_never_read_items_whole"] = not report[
            f"{store}_plans_read_items_whole"
        ]
        if args.selection_only:
            continue
        report["met"][f"{store}_ratio"] = report[f"{store}_ratio"] <= GOAL_RATIO
        report["met"][f"{store}_read_p99_ms"] = report[f"{store}_read_sweep_p99_ms"] <= GOAL_P99_MS
    if (plan.households, plan.per_profile) != (FULL.households, FULL.per_profile):
        report["note"] = (
            f"{plan.items} items, not the 1,000,000 the goals are set for"
            " (smaller run: see docs/benchmarks.md)"
        )
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}))


if __name__ == "__main__":
    main()
