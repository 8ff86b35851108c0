"""What bench/admission.py and bench/door.py share: the argon2id baseline measured in the
same run, the Redis clean-up, and the report whose last line is one JSON object (R6)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from tutela.identity.passwords import PasswordHasher
from tutela.settings import Settings

GOAL_RATIO = 0.05
ROUNDS = 5


def least(run: Callable[[], None], count: int) -> tuple[float, float]:
    """(CPU, wall) seconds per call of `run`, the least of ROUNDS rounds of `count` calls."""
    cpu, wall = [], []
    for _ in range(ROUNDS):
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(count):
            run()
        cpu.append((time.process_time() - c0) / count)
        wall.append((time.perf_counter() - w0) / count)
    return min(cpu), min(wall)


def argon2_verification(settings: Settings, count: int) -> tuple[float, float]:
    """One argon2id verification with the settings' parameters: the baseline."""
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    stored = hasher.hash("bench-refusal-baseline")
    hasher.verify(stored, "bench-refusal-baseline")

    def verify() -> None:
        assert hasher.verify(stored, "bench-refusal-baseline")

    return least(verify, count)


def clear_redis(client: redis.Redis, prefix: str) -> None:
    """Delete the bench's keys and close the client."""
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def report(
    bench: str,
    label: str,
    *,
    quick: bool,
    settings: Settings,
    figures: dict[str, Any],
    argon: tuple[float, float],
    again: tuple[float, float],
) -> None:
    """Print each store's refusal against the baseline, then the JSON line."""
    baseline = {
        "argon2_params": f"argon2id t={settings.argon2_time_cost},"
        f" m={settings.argon2_memory_kib} KiB, p={settings.argon2_parallelism}",
        "argon2_verify_cpu_ms": min(argon[0], again[0]) * 1e3,
        "argon2_verify_wall_ms": min(argon[1], again[1]) * 1e3,
    }
    stores = [s for s in ("memory", "redis") if f"refused_{s}_cpu_ms" in figures]
    ratios = {s: figures[f"refused_{s}_cpu_ms"] / baseline["argon2_verify_cpu_ms"] for s in stores}
    for store in stores:
        print(
            f"{label} ({store}): {figures[f'refused_{store}_cpu_ms']:.3f} ms CPU"
            f" ({figures[f'refused_{store}_wall_ms']:.3f} ms wall);"
            f" {ratios[store]:.2%} of one argon2id verification"
        )
    print(
        f"argon2id verification ({baseline['argon2_params']}):"
        f" {baseline['argon2_verify_cpu_ms']:.1f} ms CPU"
        f" ({baseline['argon2_verify_wall_ms']:.1f} ms wall)"
    )
    ratio = max(ratios.values())
    print(
        json.dumps(
            {
                "bench": bench,
                "quick": quick,
                "figures": {
                    k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()
                },
                "baseline": {
                    k: round(v, 3) if isinstance(v, float) else v for k, v in baseline.items()
                },
                "ratio": round(ratio, 4),
                "ratios": {k: round(v, 4) for k, v in ratios.items()},
                "goal": "< 5% of argon2id",
                "met": ratio < GOAL_RATIO,
            }
        )
    )
