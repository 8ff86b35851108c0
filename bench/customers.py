"""Benchmark of customers closing their accounts through the HTTP API, against a raw floor.

Run as `.venv/bin/python bench/customers.py [--quick] [--store sqlite|postgresql|both]`,
or `--scale-out` for two API processes and two `tutela worker`s over one PostgreSQL,
Redis and moto's S3 server (`bench/customers_scale.py`). Obligations: A5 (every copy),
A8 (nothing called deleted before it is verified: the signed receipt), S7 (a customer's
request acted on), C10 (account closure), and DESIGN.md's Scale section.

Per store: a fresh TUTELA_HOME (blobs on local disk; on PostgreSQL two fresh databases,
dropped at the end), 1,000 customers (quick: 100), each a household whose owner has 100
voice recordings of 8 to 40 KiB with their blob files (quick: 20), plus one big customer
with 10,000 recordings (quick: 2,000), written with the library (`customers_home.py`).
Then `tutela serve` on loopback with default settings (embedded worker on, raw scan on),
and each customer closes their account as a customer does (`customers_api.py`): signed
in and stepped up before the clock starts; timed from the POST of `{"scope":
"household"}` to a receipt whose Ed25519 signature verifies (polled every 10 ms).

* warm-up: 2 customers, not counted.
* sequential: 10 customers one after another (quick: 5): p50 and p95 request to receipt,
  and the 202's own latency.
* concurrent: 4 clients over 200 customers (quick: 40): completed requests/s (from the
  first POST to the last receipt) and p50/p95 request to receipt.
* big: the customer with 10,000 recordings: the 202's latency (the data is unreadable
  then: right after it, `keys.item_key` of one of its items must raise KeyUnavailable)
  and request to receipt.
* raw floor (baseline), on 10 other customers (quick: 6), half before the server starts
  and half after it stops: plain psycopg or sqlite3 (Tutela's pragmas), one DELETE per
  table of the household's rows, committed, one DELETE per key-store table of its key
  rows, committed, and `shutil.rmtree` of its blob folder. The median is the floor.

The server's CPU seconds (process tree) per completed closure are reported for each
phase (PostgreSQL's own CPU is not in it; the customer's polls are). From the signed
receipts' step times: request to `keys` (the API's part), `keys` to `blobs` (the wait for
the next worker pass, plus the blob deletion) and `blobs` to `verify` (the rest).
After the run, nothing of the erased households may remain (item rows, item keys,
household rows, blob files). The last line printed is one JSON object with every
figure, the goals and `met` per goal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import customers_api as api
import customers_home as homes

STORES = ("sqlite", "postgresql")
GOALS = {
    "concurrent_per_s_min": 20.0,
    "concurrent_p50_ms_max": 500.0,
    "sequential_p50_ms_max": 500.0,
    "big_unreadable_ms_max": 50.0,
    "big_complete_ms_max": 1000.0,
}


@dataclass(frozen=True)
class Plan:
    customers: int
    recordings: int
    big: int
    warm: int
    sequential: int
    concurrent: int
    clients: int
    floors: int


FULL = Plan(1000, 100, 10_000, 2, 10, 200, 4, 10)
QUICK = Plan(100, 20, 2_000, 2, 5, 40, 4, 6)


def unreadable_check(container: Any) -> Any:
    """After the 202: one of the customer's items must be unreadable through the library."""
    from tutela.core.errors import KeyUnavailable

    def check(signed: api.SignedIn) -> dict[str, Any]:
        try:
            container.vault.keys.item_key(household_id=signed.household_id, item_id=signed.items[0])
        except KeyUnavailable:
            return {"unreadable_at": time.perf_counter()}
        raise RuntimeError("an item of the closed household was still readable after the 202")

    return check


def summary(closures: list[api.Closure]) -> dict[str, float]:
    receipt = [c.receipt_ms for c in closures]
    accepted = [c.accepted_ms for c in closures]
    return {
        "p50_ms": statistics.median(receipt),
        "p95_ms": api.percentile(receipt, 0.95),
        "accepted_p50_ms": statistics.median(accepted),
        "accepted_p95_ms": api.percentile(accepted, 0.95),
        "polls_mean": statistics.fmean(c.polls for c in closures),
        **api.receipt_split(closures),
    }


def bench_store(store: str, plan: Plan, poll_seconds: float) -> dict[str, Any]:
    from tutela.container import build
    from tutela.db import migrate
    from tutela.settings import Settings

    work = Path(tempfile.mkdtemp(prefix=f"tutela-bench-customers-{store}-", dir="/tmp"))
    f: dict[str, Any] = {}
    try:
        with homes.databases(store, "customers") as urls:
            settings = Settings(home=work / "home", blob_store="local", log_level="WARNING", **urls)
            migrate.upgrade(settings.main_url, settings.keys_url)
            container = build(settings)
            try:
                started = time.perf_counter()
                people = homes.populate(
                    container, customers=plan.customers, recordings=plan.recordings, big=plan.big
                )
                homes.settle(store, settings)
                f["populate_s"] = time.perf_counter() - started
                big = people[-1]
                cursor = iter(people[:-1])
                warm = [next(cursor) for _ in range(plan.warm)]
                sequential = [next(cursor) for _ in range(plan.sequential)]
                concurrent = [next(cursor) for _ in range(plan.concurrent)]
                floor_people = [next(cursor) for _ in range(plan.floors)]
                half = plan.floors // 2
                floors = [homes.raw_floor(store, settings, c) for c in floor_people[:half]]
                env = {
                    "TUTELA_HOME": str(settings.home),
                    "TUTELA_BLOB_STORE": "local",
                    "TUTELA_LOG_LEVEL": "WARNING",
                }
                if urls:
                    env["TUTELA_DATABASE_URL"] = urls["database_url"]
                    env["TUTELA_KEYSTORE_URL"] = urls["keystore_url"]
                step_up_s = settings.step_up_minutes * 60.0
                with api.server(env, work / "server.log") as (proc, base):
                    public = api.public_key(base)

                    def phase(customers: list[Any], clients: int) -> dict[str, Any]:
                        signed = api.sign_in_all([base], customers, homes.PASSWORD)
                        cpu = api.tree_cpu([proc.pid])
                        done, wall = api.run_clients(
                            signed,
                            public,
                            clients=clients,
                            password=homes.PASSWORD,
                            step_up_seconds=step_up_s,
                            poll_seconds=poll_seconds,
                        )
                        cpu = api.tree_cpu([proc.pid]) - cpu
                        return {
                            **summary(done),
                            "completed": len(done),
                            "wall_s": wall,
                            "per_s": len(done) / wall,
                            "server_cpu_s_per_erasure": cpu / len(done),
                            "reconfirmed_step_ups": sum(s.reconfirmed for s in signed),
                            "request_ids": [c.request_id for c in done],
                        }

                    phase(warm, 1)
                    seq = phase(sequential, 1)
                    conc = phase(concurrent, plan.clients)
                    [signed_big] = api.sign_in_all([base], [big], homes.PASSWORD)
                    with httpx.Client(timeout=api.REQUEST_TIMEOUT_S) as client:
                        closure = api.close_account(
                            client,
                            signed_big,
                            public,
                            password=homes.PASSWORD,
                            step_up_seconds=step_up_s,
                            after_accept=unreadable_check(container),
                            poll_seconds=poll_seconds,
                        )
                floors += [homes.raw_floor(store, settings, c) for c in floor_people[half:]]
                erased = [c.household_id for c in [*warm, *sequential, *concurrent, big]]
                left = homes.remaining(store, settings, erased)
            finally:
                container.close()
    except BaseException:
        kept = Path(f"/tmp/tutela-bench-customers-logs-{os.getpid()}")
        kept.mkdir(exist_ok=True)
        for log in work.glob("*.log"):
            shutil.copy(log, kept / f"{store}-{log.name}")
        print(f"  failed: the server's log is in {kept}", file=sys.stderr, flush=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if any(left.values()):
        raise RuntimeError(f"erased households left something behind: {left}")
    floor_ms = statistics.median(x["floor_ms"] for x in floors)
    f.update(
        customers=plan.customers,
        recordings=plan.recordings,
        big_recordings=plan.big,
        floor_ms=floor_ms,
        floor_runs_ms=[round(x["floor_ms"], 1) for x in floors],
        floor_parts_ms={
            k: round(statistics.median(x[k] for x in floors), 1)
            for k in ("rows_ms", "keys_ms", "rm_ms")
        },
        left_after=left,
    )
    for name, figures in (("sequential", seq), ("concurrent", conc)):
        figures.pop("request_ids")
        f.update({f"{name}_{k}": v for k, v in figures.items()})
    f["big_accepted_ms"] = closure.accepted_ms
    f["big_unreadable_checked_ms"] = (closure.checked["unreadable_at"] - closure.started) * 1000
    f["big_complete_ms"] = closure.receipt_ms
    f.update({f"big_{k}": v for k, v in api.receipt_split([closure]).items()})
    f["ratio_sequential_p50"] = f["sequential_p50_ms"] / floor_ms
    f["ratio_concurrent_p50"] = f["concurrent_p50_ms"] / floor_ms
    f["ratio_concurrent_rate"] = (1000 / floor_ms) / f["concurrent_per_s"]
    return {f"{store}_{k}": v for k, v in f.items()}


def met(report: dict[str, Any], stores: tuple[str, ...]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for s in stores:
        out[f"{s}_concurrent_per_s"] = (
            report[f"{s}_concurrent_per_s"] >= GOALS["concurrent_per_s_min"]
        )
        out[f"{s}_concurrent_p50_ms"] = (
            report[f"{s}_concurrent_p50_ms"] <= GOALS["concurrent_p50_ms_max"]
        )
        out[f"{s}_sequential_p50_ms"] = (
            report[f"{s}_sequential_p50_ms"] <= GOALS["sequential_p50_ms_max"]
        )
        out[f"{s}_big_unreadable_ms"] = (
            report[f"{s}_big_accepted_ms"] <= GOALS["big_unreadable_ms_max"]
        )
        out[f"{s}_big_complete_ms"] = report[f"{s}_big_complete_ms"] <= GOALS["big_complete_ms_max"]
    return out


def report_lines(store: str, figures: dict[str, Any]) -> list[str]:
    f = {k.removeprefix(store + "_"): v for k, v in figures.items() if k.startswith(store + "_")}
    parts = ", ".join(f"{k.removesuffix('_ms')} {v:.1f}" for k, v in f["floor_parts_ms"].items())
    lines = [
        f"{store:>10}: {f['customers']} customers x {f['recordings']} recordings + one of"
        f" {f['big_recordings']} (populated in {f['populate_s']:.0f} s); raw floor per"
        f" customer {f['floor_ms']:.1f} ms (median of {len(f['floor_runs_ms'])}: {parts})",
    ]
    for name, goal in (("sequential", None), ("concurrent", GOALS["concurrent_per_s_min"])):
        rate = f"{f[name + '_per_s']:.2f} req/s" + (f" (goal >= {goal:.0f})" if goal else "")
        lines.append(
            f"{'':>10}  {name}: {f[name + '_completed']} closures, {rate}; request to receipt"
            f" p50 {f[name + '_p50_ms']:.0f} ms (goal <= 500), p95 {f[name + '_p95_ms']:.0f} ms;"
            f" 202 after p50 {f[name + '_accepted_p50_ms']:.0f} ms; p50 / floor"
            f" {f['ratio_' + name + '_p50']:.1f}; server CPU"
            f" {f[name + '_server_cpu_s_per_erasure'] * 1000:.0f} ms per closure"
        )
        lines.append(
            f"{'':>10}    receipts' step times, p50: request to keys"
            f" {f.get(name + '_receipt_keys_ms', 0):.0f} ms, keys to blobs (waiting for a"
            f" pass + blobs) {f.get(name + '_receipt_keys_to_blobs_ms', 0):.0f} ms, blobs to"
            f" verify {f.get(name + '_receipt_blobs_to_verify_ms', 0):.0f} ms;"
            f" {f[name + '_polls_mean']:.0f} polls per closure"
        )
    lines.append(
        f"{'':>10}  big customer: 202 (unreadable) after {f['big_accepted_ms']:.0f} ms (goal <="
        f" 50; KeyUnavailable checked at {f['big_unreadable_checked_ms']:.0f} ms), receipt after"
        f" {f['big_complete_ms']:.0f} ms (goal <= 1000); keys to blobs"
        f" {f.get('big_receipt_keys_to_blobs_ms', 0):.0f} ms, blobs to verify"
        f" {f.get('big_receipt_blobs_to_verify_ms', 0):.0f} ms"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 customers x 20, one of 2,000")
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--scale-out", action="store_true", help="2 APIs + 2 workers on PostgreSQL, Redis, S3"
    )
    parser.add_argument("--poll-ms", type=float, default=api.POLL_SECONDS * 1000)
    parser.add_argument(
        "--worker-interval",
        type=float,
        default=None,
        help="--scale-out: `tutela worker --interval` (default: the command's own)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    poll = args.poll_ms / 1000
    if args.scale_out:
        import customers_scale

        customers_scale.main(quick=args.quick, poll_seconds=poll, interval=args.worker_interval)
        return
    stores = STORES if args.store == "both" else (args.store,)
    print(
        f"customers: {plan.customers} households x {plan.recordings} voice recordings, one of"
        f" {plan.big}; closures through `tutela serve` (default settings), {os.cpu_count()} cores",
        flush=True,
    )
    report: dict[str, Any] = {"bench": "customers", "quick": args.quick, "poll_ms": args.poll_ms}
    started = time.perf_counter()
    for store in stores:
        figures = bench_store(store, plan, poll)
        report.update(figures)
        for line in report_lines(store, figures):
            print(line, flush=True)
    report["elapsed_s"] = time.perf_counter() - started
    report["floor"] = (
        "per customer: one DELETE per table of the household's rows (main store, committed),"
        " one per key-store table (committed), rmtree of its blob folder; median"
    )
    report["goals"] = GOALS
    report["met"] = met(report, stores)
    if args.quick:
        report["note"] = "quick run: goals are set for 1,000 x 100 and 10,000, checked here small"
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}))


if __name__ == "__main__":
    main()
