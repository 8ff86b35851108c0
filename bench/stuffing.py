"""Benchmark of sign-in under a credential-stuffing attack, against the same sign-ins without one.

Run as `.venv/bin/python bench/stuffing.py [--quick] [--store postgresql|sqlite|both]
[--attacker-connections 32] [--seed 1] [--variants] [--no-extras] [--redis-url URL]`.
`--variants` runs the issue's second list order (seed 2) and twice the attacker's
connections after the asked run, each on fresh stores, and reports the verdicts of each.
Server settings may be given as TUTELA_* variables in the environment (they are
reported). It makes a fresh TUTELA_HOME (on PostgreSQL two fresh databases, dropped at the
end), runs the migrations, seeds the breached-password store as `tutela db upgrade` does,
and creates the population with the library (stuffing_setup.py; two adults per household,
one argon2id hash per distinct password, as the demo does):

* victims: one account per valid pair of the attack list (2% of it), half with a
  confirmed TOTP factor;
* legitimate users (200; quick 60), half with TOTP, each from its own stable address;
* bystanders: real accounts that the list holds only with wrong passwords.

Then it starts `tutela serve --workers 2` with the throttle in Redis (shared by both
workers; db 5 of 127.0.0.1:6379 by default, flushed before and after), X-Forwarded-For
believed from 127.0.0.1 only (`TUTELA_TRUSTED_PROXIES`), and MFA only where enrolled
(`TUTELA_MFA_REQUIRED_FOR_CAMERA_VIEWERS=false`); every other setting is the default.

1. setup: every legitimate user signs in once from its address (with TOTP when enrolled;
   through the emailed link, read from `<TUTELA_HOME>/mail`, when the server asks for the
   mailbox) and keeps the known-device token it gets (`X-Tutela-Device` from then on).
2. baseline: legitimate sign-ins only, about 3 a second (Poisson), for 60 s (quick 20 s),
   from one separate process (stuffing_users.py). A user with TOTP signs in at most once
   per 30 s step: a code is accepted once.
3. attack: the same legitimate load while a separate attacker process (stuffing_attack.py)
   replays the list (100,000 pairs from 2,000 addresses in nearly as many /24s; quick
   10,000 from 200) over 32 keep-alive connections, as fast as the answers come, each
   pair once, from a random address of its pool sent as X-Forwarded-For. The attacker has
   no device token, no TOTP secret and no mailbox, and does not retry a refused pair. Of
   the list, 2% are valid pairs, 8% real emails with wrong passwords, the rest unknown
   emails; the passwords are random, none in the breached-password store, so the detector
   must find the attack by its failures alone. The attacker speaks raw HTTP/1.1 (httpx
   would take several ms of the server's two cores per request).
4. burst: with no other load, 5,000 attempts from the attack's addresses, each held back
   at the server's throttle (failures recorded in Redis until its wait is over two
   minutes, as more of the attack would leave it), so every answer should be a 429 with
   no hash:
   the server's CPU (both workers, psutil) over the burst, per refused attempt; any hash
   that happens anyway stays in the figure. The idle server's CPU per second, measured
   just before, is reported beside it. Baseline: the CPU of one argon2id verification
   with the settings' parameters, measured in this process (argon2-cffi,
   `time.process_time`). For scale, the same client's `GET /healthz` is measured too:
   the HTTP stack's own cost.
5. recovery abuse (stuffing_recovery.py; not with `--no-extras`): 10,000 (quick 2,000)
   `POST /api/v1/auth/recovery` for real and unknown addresses from 500 (quick 100)
   sources; "unavailable" in the JSON when the server has no such endpoint.
6. known-device factor guessing (stuffing_guessing.py; not with `--no-extras`): the
   library's Gate in this process on the same store, the project's FakeClock, an
   attacker with the password and the victim's device token guessing TOTP codes over 24
   simulated hours.

A takeover is a 201 with stage "full" for the attacker. A legitimate user is challenged
when any answer of a sign-in is other than its session (or, for a user with TOTP, the
code prompt that leads to it): a 429, an emailed link, an error, a dropped connection;
locked out when a sign-in cannot be completed at all within 120 s. Latency is the time to
the token of a legitimate sign-in, whatever it took. Goals (issue 11): no takeover of an
account with a factor, none of the 1,000 valid pairs without one (R5, S4); at most 1% of
legitimate users challenged and none locked out (S2); CPU per refused attempt < 5% of an
argon2id verification; legitimate p99 under attack at most 2x the baseline's; recovery
requests take over nothing and send at most one email per account per
TUTELA_RECOVERY_EMAIL_MINUTES (5) window; no account falls to 24 h of factor guessing.
The last line printed is one JSON object with every figure and `met` for each goal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

from stuffing_common import (
    ATTACK_CONNECTIONS,
    FULL,
    GOAL_CHALLENGED_RATIO,
    GOAL_CPU_RATIO,
    GOAL_GUESSING_FALLEN,
    GOAL_LOCKED_OUT,
    GOAL_P99_RATIO,
    GOAL_RECOVERY_TAKEN_OVER,
    GOAL_TAKEN_OVER_MFA,
    GOAL_TAKEN_OVER_NO_MFA,
    QUICK,
    REDIS_URL,
    SERVER_WORKERS,
    VALID_SHARE,
    Plan,
)
from stuffing_runs import bench_store


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
        "taken_over_no_mfa_max": GOAL_TAKEN_OVER_NO_MFA,
        "legit_challenged_ratio_max": GOAL_CHALLENGED_RATIO,
        "legit_locked_out_max": GOAL_LOCKED_OUT,
        "cpu_ratio_below": GOAL_CPU_RATIO,
        "p99_ratio_max": GOAL_P99_RATIO,
    }
    report["met"] = {
        "taken_over_mfa": report["taken_over_mfa"] <= GOAL_TAKEN_OVER_MFA,
        "taken_over_no_mfa": report["taken_over_no_mfa"] <= GOAL_TAKEN_OVER_NO_MFA,
        "legit_challenged_ratio": report["legit_challenged_ratio"] <= GOAL_CHALLENGED_RATIO,
        "legit_locked_out": report["legit_locked_out"] <= GOAL_LOCKED_OUT,
        "cpu_ratio": report["cpu_ratio"] < GOAL_CPU_RATIO,
        "p99_ratio": report["p99_ratio"] <= GOAL_P99_RATIO,
    }
    unavailable: list[str] = []
    recovery = figures.get("recovery")
    if recovery is not None and recovery["status"] == "measured":
        report["goals"]["recovery_taken_over_max"] = GOAL_RECOVERY_TAKEN_OVER
        report["goals"]["recovery_emails"] = "at most one per account per window"
        report["met"]["recovery_taken_over"] = recovery["taken_over"] <= GOAL_RECOVERY_TAKEN_OVER
        report["met"]["recovery_emails_within_throttle"] = recovery["addresses_over_allowance"] == 0
    elif recovery is not None and recovery["status"] == "error":
        report["met"]["recovery_taken_over"] = False  # not shown: not met
        report["met"]["recovery_emails_within_throttle"] = False
    elif recovery is not None:
        unavailable.append("recovery")
    guessing = figures.get("factor_guessing")
    if guessing is not None and guessing["status"] == "error":
        report["met"]["factor_guessing_no_account_falls"] = False
    elif guessing is not None:
        report["goals"]["factor_guessing_fallen_max"] = GOAL_GUESSING_FALLEN
        report["met"]["factor_guessing_no_account_falls"] = (
            guessing["accounts_fallen"] <= GOAL_GUESSING_FALLEN
            and guessing["simulated_day_completed"]
        )
    if unavailable:
        report["unavailable"] = unavailable
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
        f" without {report['taken_over_no_mfa']} of {report['valid_pairs_no_mfa']} valid pairs"
        f" (goal 0: {met['taken_over_no_mfa']});"
        f" sessions issued to the attacker: {report['sessions_issued_to_attacker']}",
        f"  legitimate users under attack: {report['legit_signins']} sign-ins by"
        f" {report['legit_users']} users; challenged {report['legit_challenged_users']} users"
        f" ({report['legit_challenged_ratio'] * 100:.1f}%, goal <= 1%:"
        f" {met['legit_challenged_ratio']}; {report['legit_challenged_signins']} sign-ins),"
        f" locked out {report['legit_locked_out']} (goal 0: {met['legit_locked_out']})"
        + (f"; {under['reasons']}" if under["reasons"] else ""),
        f"  CPU per rejected attempt {report['cpu_per_rejected_ms']:.2f} ms"
        f" ({burst['outcomes']} from {burst['sources']} throttled addresses,"
        f" {burst['sign_in_busy']} of the 429s by admission) vs"
        f" {report['cpu_per_argon2_ms']:.1f} ms per argon2id verification:"
        f" ratio {report['cpu_ratio'] * 100:.1f}% (goal < 5%: {met['cpu_ratio']});"
        f" GET /healthz costs {report['cpu_per_healthz_ms']:.2f} ms; the idle server"
        f" {burst['idle_server_cpu_ms_per_s']:.0f} ms per second",
        f"  legitimate sign-in p99 {report['p99_ms_attack']:.0f} ms under attack vs"
        f" {report['p99_ms_baseline']:.0f} ms without: ratio {report['p99_ratio']:.2f}"
        f" (goal <= 2: {met['p99_ratio']}); p50 {under['p50_ms']:.0f} vs"
        f" {report['baseline']['p50_ms']:.0f} ms",
        f"  server CPU over the attack {attack['server_cpu_s']:.0f} s"
        f" ({attack['server_cpu_ms_per_attempt']:.1f} ms per attempt), machine busy"
        f" {attack['machine_busy'] * 100:.0f}%; attacker client CPU {attack['client_cpu_s']:.0f} s",
        *extra_lines(report, met),
    ]


def extra_lines(report: dict[str, Any], met: dict[str, str]) -> list[str]:
    """The recovery-abuse and factor-guessing verdicts, when those runs were made."""
    lines = []
    recovery = report.get("recovery")
    if recovery is not None and recovery["status"] == "error":
        lines.append(f"  recovery abuse: error {recovery['error']}")
    elif recovery is not None and recovery["status"] != "measured":
        lines.append(f"  recovery abuse: unavailable (HTTP {recovery['probe_status']})")
    elif recovery is not None:
        lines.append(
            f"  recovery abuse: {recovery['requests']} requests, answers {recovery['answers']};"
            f" taken over {recovery['taken_over']} (goal 0: {met['recovery_taken_over']});"
            f" emails to accounts {recovery['emails_sent_to_real']}, allowed"
            f" {recovery['emails_allowed']}, {recovery['addresses_over_allowance']} addresses"
            f" over (goal 0: {met['recovery_emails_within_throttle']})"
        )
    guessing = report.get("factor_guessing")
    if guessing is not None and guessing["status"] == "error":
        lines.append(f"  known-device factor guessing: error {guessing['error']}")
    elif guessing is not None:
        lines.append(
            f"  known-device factor guessing: {guessing['guesses_checked']} guesses checked on"
            f" {guessing['victims']} accounts (first refusal after"
            f" {guessing['first_refusal_at_checked']}); fallen {guessing['accounts_fallen']},"
            f" 24 h simulated: {guessing['simulated_day_completed']}, projected"
            f" {guessing['projected_checked_per_day_max']} guesses a day (goal: none falls:"
            f" {met['factor_guessing_no_account_falls']})"
        )
    return lines


def variants_of(seed: int, connections: int, more: bool) -> list[tuple[str, int, int]]:
    """(label, seed, attacker connections) of each run: the asked one, then the issue's
    second list order and twice the connections when `more`."""
    runs = [("as asked", seed, connections)]
    if more:
        runs.append(("second list order", 2 if seed != 2 else 3, connections))
        runs.append(("twice the connections", seed, connections * 2))
    return runs


def run_store(store: str, plan: Plan, args: argparse.Namespace, source: str) -> dict[str, Any]:
    """One store: every variant; the first also with the extra runs. Its report."""
    main_report: dict[str, Any] | None = None
    others: list[dict[str, Any]] = []
    for n, (label, seed, connections) in enumerate(
        variants_of(args.seed, args.attacker_connections, args.variants)
    ):
        print(
            f"{store:>10}: run {n + 1} ({label}: seed {seed}, {connections} connections)",
            flush=True,
        )
        try:
            figures = bench_store(
                store,
                plan,
                seed,
                args.redis_url,
                connections=connections,
                extras=n == 0 and not args.no_extras,
                keep=args.keep,
            )
        except Exception as failure:  # a variant that could not run: reported, not hidden
            if main_report is None:
                raise
            traceback.print_exc()
            others.append({"variant": label, "seed": seed, "error": repr(failure)[:500]})
            continue
        report = headline(store, plan, figures, seed, connections, source)
        for line in report_lines(report):
            print(line, flush=True)
        if main_report is None:
            main_report = report
        else:
            others.append({"variant": label, **report})
    assert main_report is not None
    if others:
        main_report["variants"] = [
            {k: v for k, v in o.items() if k in VARIANT_FIGURES} for o in others
        ]
        main_report["variants_same_verdicts"] = all(
            "met" in o and o["met"] == {k: main_report["met"][k] for k in o["met"]} for o in others
        )
    return main_report


# What a variant's report keeps: its verdicts and the figures behind them.
VARIANT_FIGURES = {
    "variant",
    "seed",
    "attacker_connections",
    "attempts",
    "valid_pairs_mfa",
    "valid_pairs_no_mfa",
    "taken_over_mfa",
    "taken_over_no_mfa",
    "legit_signins",
    "legit_challenged_users",
    "legit_challenged_ratio",
    "legit_locked_out",
    "cpu_per_rejected_ms",
    "cpu_per_argon2_ms",
    "cpu_ratio",
    "p99_ms_attack",
    "p99_ms_baseline",
    "p99_ratio",
    "met",
    "error",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 attempts from 200 addresses")
    parser.add_argument("--store", choices=["postgresql", "sqlite", "both"], default="postgresql")
    parser.add_argument(
        "--attacker-connections",
        "--connections",
        dest="attacker_connections",
        type=int,
        default=ATTACK_CONNECTIONS,
        help=f"the attacker's keep-alive connections (default {ATTACK_CONNECTIONS})",
    )
    parser.add_argument("--seed", type=int, default=1, help="the order of the attacker's list")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also run seed 2 and twice the attacker's connections, with verdicts for each",
    )
    parser.add_argument(
        "--no-extras",
        action="store_true",
        help="skip the recovery-abuse and known-device factor-guessing runs",
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help="a Redis db of its own: flushed")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (and log)")
    args = parser.parse_args()

    plan = QUICK if args.quick else FULL
    print(
        f"stuffing: {plan.attempts} attempts from {plan.sources} addresses"
        f" ({VALID_SHARE:.0%} valid pairs, half with MFA) over {args.attacker_connections}"
        f" connections, {plan.legit_users} legitimate users at {plan.legit_rate:g} sign-ins/s;"
        f" {SERVER_WORKERS} server workers, throttle in Redis, {os.cpu_count()} cores shared"
        " by the server, both clients, Redis and the database",
        flush=True,
    )
    started = time.perf_counter()
    source = source_version()  # what the server runs: read before it starts
    stores = ["postgresql", "sqlite"] if args.store == "both" else [args.store]
    if len(stores) == 1:
        report = run_store(stores[0], plan, args, source)
    else:
        reports: dict[str, dict[str, Any]] = {}
        for store in stores:
            try:
                reports[store] = run_store(store, plan, args, source)
            except Exception as failure:  # the other store still runs; reported, not hidden
                traceback.print_exc()
                reports[store] = {"store": store, "error": repr(failure)[:500], "met": {}}
        report = {
            "bench": "stuffing",
            "quick": plan is QUICK,
            "source": source,
            "stores": reports,
            "met": {s: bool(r["met"]) and all(r["met"].values()) for s, r in reports.items()},
        }
    report["elapsed_s"] = time.perf_counter() - started
    if plan is QUICK:
        report["note"] = "quick run: 10,000 attempts from 200 addresses"
    print(json.dumps(rounded(report)))


def rounded(value: Any) -> Any:
    """Floats to 4 places, all the way down: the JSON line stays readable."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


if __name__ == "__main__":
    main()
