"""`bench/customers.py --scale-out`: two APIs and two workers over one PostgreSQL, Redis and S3.

DESIGN.md's Scale section says API processes are stateless and any number of workers can
claim jobs (`SKIP LOCKED`); this is the evidence, on one machine (A5, A8, S7). One
PostgreSQL (two fresh databases: the main store and the key store), Redis for the
sign-in throttles (`TUTELA_REDIS_URL`), blobs over the S3 protocol served by moto's
server (`moto_server`, a process of its own), two `tutela serve` processes on two ports
with `TUTELA_EMBEDDED_WORKER=false`, and `tutela worker` processes (default interval,
log level INFO so each pass's completions are logged). Clients spread their customers
over both APIs, round-robin.

* warm-up: one closure through each API, one at a time, untimed (but checked below).
* single: one worker, 4 clients over 200 customers (quick: 40).
* scale-out: a second worker joins (started before the clock), 4 clients over 200 more.

For each: completed closures/s and request-to-receipt p50/p95, the workers' CPU seconds
(process trees, psutil) and completed closures per worker CPU second, the per-core
figure whose two-worker value must hold (>= 0.8 of the single worker's). Afterwards:
every request `completed` with one `erasure:request:complete` audit event, a record of
every step in order, none left pending or running, the workers' logged completions
adding up to the requests, no "lease lost", and nothing of the erased households left
(item rows, item keys, household rows, S3 objects).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

import customers_api as api
import customers_home as homes

REDIS_URL = "redis://127.0.0.1:6379/6"
BUCKET = "tutela-bench-customers"
PER_CORE_HELD = 0.8
WARM = 2  # closures before the clock, one through each API
COMPLETED_LOG = re.compile(r"worker pass: (\d+) erasures completed")


def wait_for(log_path: Path, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{log_path.name} did not say {text!r} within {timeout:.0f} s")
        time.sleep(0.1)


def warm_up(base: str, customer: Any, public: Any, step_up_s: float, poll_seconds: float) -> str:
    """One closure, untimed; its request id (checked with the others)."""
    [signed] = api.sign_in_all([base], [customer], homes.PASSWORD)
    with httpx.Client(timeout=api.REQUEST_TIMEOUT_S) as client:
        return api.close_account(
            client,
            signed,
            public,
            password=homes.PASSWORD,
            step_up_seconds=step_up_s,
            poll_seconds=poll_seconds,
        ).request_id


def phase(
    bases: list[str],
    customers: list[Any],
    public: Any,
    workers: list[Any],
    apis: list[Any],
    *,
    step_up_s: float,
    poll_seconds: float,
) -> dict[str, Any]:
    signed = api.sign_in_all(bases, customers, homes.PASSWORD)
    worker_cpu = api.tree_cpu([w.pid for w in workers])
    api_cpu = api.tree_cpu([a.pid for a in apis])
    done, wall = api.run_clients(
        signed,
        public,
        clients=4,
        password=homes.PASSWORD,
        step_up_seconds=step_up_s,
        poll_seconds=poll_seconds,
    )
    worker_cpu = api.tree_cpu([w.pid for w in workers]) - worker_cpu
    api_cpu = api.tree_cpu([a.pid for a in apis]) - api_cpu
    receipt = [c.receipt_ms for c in done]
    return {
        "workers": len(workers),
        "completed": len(done),
        "wall_s": wall,
        "per_s": len(done) / wall,
        "p50_ms": statistics.median(receipt),
        "p95_ms": api.percentile(receipt, 0.95),
        "accepted_p50_ms": statistics.median(c.accepted_ms for c in done),
        "worker_cpu_s": worker_cpu,
        "api_cpu_s": api_cpu,
        "per_worker_cpu_s": len(done) / worker_cpu if worker_cpu else 0.0,
        **api.receipt_split(done),
        "request_ids": [c.request_id for c in done],
    }


def exactly_once(settings: Any, request_ids: list[str]) -> dict[str, Any]:
    """Each request completed once: its row, its audit events, its step record."""
    from tutela.erasure.models import STEPS, Step

    order = [s.value for s in STEPS if s is not Step.DONE]
    ids = [uuid.UUID(r) for r in request_ids]
    with psycopg.connect(settings.main_url) as conn:
        rows = conn.execute(
            "SELECT id, status, step, step_times FROM erasure_requests WHERE id = ANY(%s)", (ids,)
        ).fetchall()
        events = dict(
            conn.execute(
                "SELECT subject, count(*) FROM audit_events WHERE tag = %s AND subject = ANY(%s)"
                " GROUP BY subject",
                ("erasure:request:complete", [f"erasure:{i}" for i in ids]),
            ).fetchall()
        )
        open_rows = conn.execute(
            "SELECT status, count(*) FROM erasure_requests WHERE status <> 'completed'"
            " GROUP BY status"
        ).fetchall()
    not_completed = [str(r[0]) for r in rows if r[1] != "completed" or r[2] != "done"]
    events_per_request = [events.get(f"erasure:{i}", 0) for i in ids]
    steps_out_of_order = 0
    steps_missing: dict[str, int] = {}
    for _, _, _, times_text in rows:
        times = json.loads(times_text or "{}")
        seen = [s for s in order if s in times]
        for s in order:
            if s not in times:
                steps_missing[s] = steps_missing.get(s, 0) + 1
        stamps = [datetime.fromisoformat(times[s]) for s in seen]
        if stamps != sorted(stamps):
            steps_out_of_order += 1
    return {
        "requests": len(ids),
        "rows_found": len(rows),
        "not_completed": not_completed,
        "completion_events_min": min(events_per_request, default=0),
        "completion_events_max": max(events_per_request, default=0),
        "steps_missing": steps_missing,
        "steps_out_of_order": steps_out_of_order,
        "open_requests": {str(s): int(n) for s, n in open_rows},
    }


def main(*, quick: bool, poll_seconds: float, interval: float | None) -> None:
    from tutela.container import build
    from tutela.db import migrate
    from tutela.erasure.models import Step
    from tutela.settings import Settings

    customers, recordings, per_phase = (100, 20, 40) if quick else (1000, 100, 200)
    print(
        f"customers --scale-out: {customers} households x {recordings} voice recordings;"
        f" 2 APIs, 1 then 2 workers, PostgreSQL + Redis + moto S3; {per_phase} closures each",
        flush=True,
    )
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tutela-bench-customers-scale-", dir="/tmp"))
    report: dict[str, Any] = {"bench": "customers_scale_out", "quick": quick}
    try:
        with ExitStack() as stack:
            urls = stack.enter_context(homes.databases("postgresql", "customers_scale"))
            port = api.free_port()
            endpoint = f"http://127.0.0.1:{port}"
            moto_server = str(Path(api.tutela()[0]).with_name("moto_server"))
            stack.enter_context(
                api.process(
                    [moto_server, "-H", "127.0.0.1", "-p", str(port)],
                    {},
                    work / "moto.log",
                    health_url=endpoint + "/moto-api/",
                )
            )
            env = {
                "TUTELA_HOME": str(work / "home"),
                "TUTELA_DATABASE_URL": urls["database_url"],
                "TUTELA_KEYSTORE_URL": urls["keystore_url"],
                "TUTELA_BLOB_STORE": "s3",
                "TUTELA_S3_ENDPOINT_URL": endpoint,
                "TUTELA_S3_BUCKET": BUCKET,
                "TUTELA_S3_ACCESS_KEY_ID": "bench",
                "TUTELA_S3_SECRET_ACCESS_KEY": "bench",
                "TUTELA_REDIS_URL": REDIS_URL,
                "TUTELA_EMBEDDED_WORKER": "false",
                "TUTELA_LOG_LEVEL": "WARNING",
            }
            settings = Settings(**{k.removeprefix("TUTELA_").lower(): v for k, v in env.items()})
            migrate.upgrade(settings.main_url, settings.keys_url)
            container = build(settings)
            stack.callback(container.close)
            people = homes.populate(container, customers=customers, recordings=recordings, big=0)
            homes.settle("postgresql", settings)
            report["populate_s"] = time.perf_counter() - started
            bases = []
            apis = []
            for n in range(2):
                proc, base = stack.enter_context(api.server(env, work / f"api{n}.log"))
                apis.append(proc)
                bases.append(base)
            public = api.public_key(bases[0])
            command = api.tutela("worker", *(["--interval", str(interval)] if interval else []))
            worker_env = {**env, "TUTELA_LOG_LEVEL": "INFO"}
            workers = []
            step_up_s = settings.step_up_minutes * 60.0
            phases: dict[str, dict[str, Any]] = {}
            warm_ids: list[str] = []
            for name, first in (("single", WARM), ("scale_out", WARM + per_phase)):
                log_path = work / f"worker{len(workers)}.log"
                workers.append(stack.enter_context(api.process(command, worker_env, log_path)))
                wait_for(log_path, "worker started")
                if not phases:
                    # One closure through each API first, one at a time: each process makes
                    # its pools and, on a fresh install, the erasure service keys (two
                    # processes making one at once collide: see the benchmarks doc).
                    warm_ids = [
                        warm_up(base, people[at], public, step_up_s, poll_seconds)
                        for at, base in enumerate(bases)
                    ]
                phases[name] = phase(
                    bases,
                    people[first : first + per_phase],
                    public,
                    workers,
                    apis,
                    step_up_s=step_up_s,
                    poll_seconds=poll_seconds,
                )
                print(
                    f"  {name}: {len(workers)} worker(s): {phases[name]['per_s']:.2f} closures/s,"
                    f" p50 {phases[name]['p50_ms']:.0f} ms, p95 {phases[name]['p95_ms']:.0f} ms;"
                    f" workers' CPU {phases[name]['worker_cpu_s']:.1f} s:"
                    f" {phases[name]['per_worker_cpu_s']:.2f} closures per worker CPU second",
                    flush=True,
                )
            time.sleep(1.0)  # the last pass's log line
            request_ids = warm_ids + [r for p in phases.values() for r in p.pop("request_ids")]
            checks = exactly_once(settings, request_ids)
            erased = [c.household_id for c in people[: WARM + 2 * per_phase]]
            checks["left_after"] = homes.remaining("postgresql", settings, erased)
            checks["s3_objects_left"] = sum(
                1 for hh in erased for _ in container.vault.blobs.keys(f"{hh}/")
            )
            checks["s3_objects_kept_others"] = sum(
                1
                for c in people[WARM + 2 * per_phase :]
                for _ in container.vault.blobs.keys(f"{c.household_id}/")
            )
        # The processes are stopped now: their logs are whole.
        logs = {p.name: p.read_text(errors="replace") for p in sorted(work.glob("worker*.log"))}
        api_logs = "".join(p.read_text(errors="replace") for p in work.glob("api*.log"))
    except BaseException:
        kept = Path(f"/tmp/tutela-bench-customers-scale-logs-{os.getpid()}")
        shutil.copytree(work, kept, ignore=shutil.ignore_patterns("home"), dirs_exist_ok=True)
        print(f"  failed: the processes' logs are in {kept}", file=sys.stderr, flush=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    checks["logged_completions"] = {
        name: sum(int(n) for n in COMPLETED_LOG.findall(text)) for name, text in logs.items()
    }
    checks["lease_lost_lines"] = sum(text.count("lease lost") for text in logs.values())
    checks["server_errors_logged"] = api_logs.count("Traceback") + sum(
        t.count("Traceback") for t in logs.values()
    )
    single, scaled = phases["single"], phases["scale_out"]
    held = (
        scaled["per_worker_cpu_s"] / single["per_worker_cpu_s"] if single["per_worker_cpu_s"] else 0
    )
    report.update(
        customers=customers,
        recordings=recordings,
        per_phase=per_phase,
        worker_interval_s=interval,
        steps=[s.value for s in Step],
        single=single,
        scale_out=scaled,
        per_core_ratio=held,
        rate_ratio=scaled["per_s"] / single["per_s"],
        checks=checks,
    )
    report["elapsed_s"] = time.perf_counter() - started
    report["baseline"] = "the same topology with one worker, in the same run"
    report["goals"] = {
        "per_core_ratio_min": PER_CORE_HELD,
        "each_request_completed": "exactly once",
    }
    report["met"] = {
        "none_lost": not checks["not_completed"]
        and checks["rows_found"] == checks["requests"]
        and not checks["open_requests"],
        "none_twice": checks["completion_events_max"] == 1
        and checks["completion_events_min"] == 1
        and sum(checks["logged_completions"].values()) == checks["requests"]
        and checks["lease_lost_lines"] == 0,
        "steps_recorded": not checks["steps_missing"] and checks["steps_out_of_order"] == 0,
        "nothing_left": not any(checks["left_after"].values()) and checks["s3_objects_left"] == 0,
        "per_core_held": held >= PER_CORE_HELD,
    }
    print(
        f"  checks: {checks['requests']} requests, not completed {len(checks['not_completed'])},"
        f" completion events per request {checks['completion_events_min']}-"
        f"{checks['completion_events_max']}, logged completions {checks['logged_completions']},"
        f" lease lost {checks['lease_lost_lines']}, left {checks['left_after']},"
        f" S3 objects left {checks['s3_objects_left']}",
        flush=True,
    )
    print(
        f"  per worker CPU second: {single['per_worker_cpu_s']:.2f} (1 worker) ->"
        f" {scaled['per_worker_cpu_s']:.2f} (2 workers), ratio {held:.2f}"
        f" (goal >= {PER_CORE_HELD}); closures/s {single['per_s']:.2f} -> {scaled['per_s']:.2f}",
        flush=True,
    )
    print(json.dumps(rounded(report)))


def rounded(value: Any) -> Any:
    """Floats to 3 decimals, all the way down."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return value
