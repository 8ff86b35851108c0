"""One store's run: fresh stores, the server, the phases of the measurement, clean-up."""

from __future__ import annotations

import collections
import ipaddress
import json
import random
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stuffing_attack import run_attacker
from stuffing_common import (
    DEFENDED_KEY,
    HASHED,
    LEGIT_CONNECTIONS,
    OUTCOMES,
    QUICK,
    Plan,
    backend_cpu,
    backend_cpu_since,
    machine_busy,
    tree_cpu,
)
from stuffing_guessing import factor_guessing
from stuffing_recovery import recovery_abuse
from stuffing_server import argon2_cpu_ms, databases, server, throttle_db
from stuffing_setup import create_population, make_attack, make_people
from stuffing_users import UsersProcess, summarise_users
from tutela.identity.throttle import Attempt, RedisThrottle, ThrottlePolicy

if TYPE_CHECKING:
    from tutela.settings import Settings


BURST_HORIZON_S = 120.0
IDLE_S = 2.0


def held_back(client: Any, settings: Settings, sources: list[str], horizon_s: float) -> int:
    """Make each source wait more than `horizon_s` at the server's throttle (in Redis).

    Failures are recorded for a source until its wait is that long, as more of the attack
    would have left it; returns how many were recorded. The attacker's notes of
    `Retry-After` do not tell which sources are still held back: a wait counts the
    source's attempts then in flight as failures, and one that proves a right password
    (or is released) settles without one, so the wait can end sooner than it said.
    """
    throttle = RedisThrottle(client, ThrottlePolicy.from_settings(settings))
    now = time.time()
    recorded = 0
    for source in sources:
        while throttle.source_wait(source, now) <= horizon_s:
            throttle.record_failure(Attempt(f"a:{recorded:040x}", source), now)
            recorded += 1
    return recorded


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
    store: str,
    plan: Plan,
    seed: int,
    redis_url: str,
    *,
    connections: int,
    extras: bool = True,
    keep: bool = False,
) -> dict[str, Any]:
    """One store's whole run; with `extras`, the recovery-abuse and factor-guessing runs."""
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
        # The list's invalid pairs over and over, up to the burst's size.
        burst = [invalid[n % len(invalid)] for n in range(plan.burst)]
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
                "TUTELA_MFA_REQUIRED_FOR_CAMERA_VIEWERS": "false",
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
                    if figures["setup"]["signed_in"] == 0:
                        raise RuntimeError(f"no setup sign-in succeeded: {figures['setup']}")
                    if figures["setup"]["with_device"] != len(legit):
                        # They go on without a device token: their sign-ins will show it.
                        print(f"{'':>10}  setup: {figures['setup']}", flush=True)

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
                    attack["sign_in_busy"] = raw["busy"]  # 429s by admission, at the route
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

                    time.sleep(1.0)  # let the last notices go out
                    # The attack's sources, each held back well past the burst.
                    burst_sources = list(raw["blocked_until"])
                    topped_up = held_back(throttle, defaults, burst_sources, BURST_HORIZON_S)
                    # What the server spends doing nothing, to read the burst's figure by.
                    cpu0 = tree_cpu(proc.pid)
                    time.sleep(IDLE_S)
                    idle_cpu = tree_cpu(proc.pid) - cpu0
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
                        "idle_server_cpu_ms_per_s": idle_cpu * 1000 / IDLE_S,
                        "failures_recorded_to_hold_back": topped_up,
                        "sign_in_busy": burst_raw["busy"],
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
                if extras:
                    figures["recovery"] = guarded(
                        recovery_abuse,
                        base_url=base_url,
                        mail_dir=work / "home" / "mail",
                        people=[p for p in people if p.role in ("legit", "bystander")],
                        requests=plan.recovery_requests,
                        sources=plan.recovery_sources,
                        accounts=plan.recovery_accounts,
                        connections=LEGIT_CONNECTIONS,
                        seed=seed,
                        avoid=set(attack_list["sources"]) | {p.address for p in legit},
                    )
                    say_recovery(figures["recovery"])
            if extras:
                figures["factor_guessing"] = guarded(
                    factor_guessing, env, victims=plan.guess_victims, cap=plan.guess_cap, seed=seed
                )
                say_guessing(figures["factor_guessing"])
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


def guarded(run: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """An extra run's figures, or what stopped it: the main figures are kept either way."""
    try:
        return run(*args, **kwargs)
    except Exception as failure:  # reported in the JSON and on stderr, not hidden
        traceback.print_exc()
        return {"status": "error", "error": f"{type(failure).__name__}: {failure}"[:500]}


def say_recovery(found: dict[str, Any]) -> None:
    if found["status"] == "error":
        print(f"{'':>10}  recovery: error {found['error']}", flush=True)
        return
    if found["status"] != "measured":
        print(f"{'':>10}  recovery: unavailable (HTTP {found['probe_status']})", flush=True)
        return
    print(
        f"{'':>10}  recovery: {found['requests']} requests from {found['sources']} addresses"
        f" in {found['elapsed_s']:.0f} s, answers {found['answers']}; emails"
        f" {found['emails_sent_to_real']} to real accounts (allowed {found['emails_allowed']}),"
        f" {found['emails_sent_to_unknown']} to unknown; taken over {found['taken_over']}",
        flush=True,
    )


def say_guessing(found: dict[str, Any]) -> None:
    if found["status"] == "error":
        print(f"{'':>10}  factor guessing: error {found['error']}", flush=True)
        return
    print(
        f"{'':>10}  factor guessing: {found['victims']} victims, {found['guesses_checked']}"
        f" guesses checked (at most {found['guesses_checked_max']} per account; first"
        f" refusal after {found['first_refusal_at_checked']}), fallen {found['accounts_fallen']},"
        f" 24 h completed: {found['simulated_day_completed']}",
        flush=True,
    )
