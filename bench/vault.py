"""Benchmark of the vault's media path: seal-and-store and read-and-open, against raw AES-GCM.

Run as `.venv/bin/python bench/vault.py [--quick]`. For each clip size it measures:

* store: a per-clip key, `StreamSealer` over the clip fed in 1 MiB pieces, written with
  `LocalBlobStore.write` (temporary file, fsync, rename);
  baseline: one-shot AES-256-GCM of the same bytes written to a file with the same
  durability (temporary file, fsync, rename);
* read: `StreamOpener.read` over the whole blob through `LocalBlobStore.read_at`;
  baseline: the file read whole and decrypted with one-shot AES-256-GCM.

Throughput is the best of several repetitions, in MiB/s of plaintext. Peak memory is
measured in a fresh subprocess per measurement that streams the clip from a file on disk,
so the clip itself is never held in memory. Goals (from the issue): at 50 MiB both ratios
>= 0.7 of raw, and peak memory <= 16 MiB above the process's baseline. The last line
printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tutela.vault.blobs import LocalBlobStore
from tutela.vault.crypto import STREAM_HEADER, StreamOpener, StreamSealer, new_key

MiB = 1024 * 1024
PIECE = MiB
AAD = b"clip:bench"
GOAL_RATIO = 0.7
GOAL_PEAK_MIB = 16.0


def label(size: int) -> str:
    return f"{size // MiB}mib"


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` runs, after one warm-up run."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def in_pieces(clip: bytes) -> list[bytes]:
    """The clip as the 1 MiB pieces an upload arrives in (cut before timing starts)."""
    return [clip[at : at + PIECE] for at in range(0, len(clip), PIECE)]


def seal_and_store(store: LocalBlobStore, key_name: str, pieces: list[bytes]) -> tuple[bytes, int]:
    key = new_key()
    sealer = StreamSealer(key, aad=AAD)
    store.write(key_name, sealer.seal(pieces))
    return key, sealer.plain_size


def read_and_open(store: LocalBlobStore, key_name: str, key: bytes, plain_size: int) -> int:
    header = store.read_at(key_name, 0, STREAM_HEADER.size)
    opener = StreamOpener(key, aad=AAD, header=header, plain_size=plain_size)
    read = 0
    for plain in opener.read(lambda offset, length: store.read_at(key_name, offset, length)):
        read += len(plain)
    assert read == plain_size
    return read


def raw_encrypt_and_write(path: Path, clip: bytes) -> tuple[bytes, bytes]:
    key, nonce = new_key(), os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, clip, AAD)
    incoming = path.with_name(".incoming-" + path.name)
    with incoming.open("wb") as out:
        out.write(sealed)
        out.flush()
        os.fsync(out.fileno())
    incoming.replace(path)
    return key, nonce


def raw_read_and_decrypt(path: Path, key: bytes, nonce: bytes) -> int:
    return len(AESGCM(key).decrypt(nonce, path.read_bytes(), AAD))


def throughput(size: int, work: Path, repeats: int) -> dict[str, float]:
    """Store and read figures for one clip size, with their raw baselines."""
    clip = os.urandom(size)
    pieces = in_pieces(clip)
    store = LocalBlobStore(work / "store")
    raw_path = work / "raw.bin"
    mib = size / MiB

    store_s = best_seconds(lambda: seal_and_store(store, "clips/bench", pieces), repeats)
    raw_store_s = best_seconds(lambda: raw_encrypt_and_write(raw_path, clip), repeats)

    key, plain_size = seal_and_store(store, "clips/bench", pieces)
    read_s = best_seconds(lambda: read_and_open(store, "clips/bench", key, plain_size), repeats)
    raw_key, nonce = raw_encrypt_and_write(raw_path, clip)
    raw_read_s = best_seconds(lambda: raw_read_and_decrypt(raw_path, raw_key, nonce), repeats)

    name = label(size)
    figures = {
        f"store_{name}_mib_s": mib / store_s,
        f"store_{name}_raw_mib_s": mib / raw_store_s,
        f"read_{name}_mib_s": mib / read_s,
        f"read_{name}_raw_mib_s": mib / raw_read_s,
    }
    figures[f"store_{name}_ratio"] = raw_store_s / store_s
    figures[f"read_{name}_ratio"] = raw_read_s / read_s
    return figures


# --- peak memory, one fresh subprocess per measurement ----------------------------------

PEAK_METHOD = {
    "rss": "VmHWM after (high-water mark reset via /proc/self/clear_refs) minus VmRSS before",
    "maxrss": "ru_maxrss after minus VmRSS before (peak could not be reset)",
    "tracemalloc": "tracemalloc peak of Python allocations while streaming",
}


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def reset_peak_rss() -> bool:
    """Linux lets a process reset its own RSS high-water mark (proc(5), clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def clip_pieces(path: Path) -> Iterator[bytes]:
    with path.open("rb") as clip:
        while piece := clip.read(PIECE):
            yield piece


def child(args: argparse.Namespace) -> None:
    """Stream one clip through the sealer into the store (or back), then report the peak."""
    store = LocalBlobStore(Path(args.store))
    key = bytes.fromhex(args.key)
    plain_size = os.stat(args.clip).st_size
    method = args.method
    if method == "tracemalloc":
        tracemalloc.start()
    else:
        method = "rss" if reset_peak_rss() else "maxrss"
        before_kib = proc_status_kib("VmRSS")

    if args.operation == "store":
        sealer = StreamSealer(key, aad=AAD)
        store.write(args.blob, sealer.seal(clip_pieces(Path(args.clip))))
    else:
        read_and_open(store, args.blob, key, plain_size)

    if method == "tracemalloc":
        peak_bytes = tracemalloc.get_traced_memory()[1]
    elif method == "rss":
        peak_bytes = (proc_status_kib("VmHWM") - before_kib) * 1024
    else:
        peak_bytes = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib) * 1024
    print(json.dumps({"method": method, "peak_mib": peak_bytes / MiB}))


def measure_peak(
    operation: str, method: str, *, clip: Path, store: Path, key: bytes
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", operation, "--method", method]
    command += [
        "--clip",
        str(clip),
        "--store",
        str(store),
        "--blob",
        "clips/memory",
        "--key",
        key.hex(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def peak_memory(size: int, work: Path) -> dict[str, Any]:
    """Peak memory above baseline to store, then to read back, a clip held on disk."""
    clip = work / "clip.bin"
    with clip.open("wb") as out:
        for _ in range(size // MiB):
            out.write(os.urandom(MiB))
    store, key = work / "memory-store", new_key()
    figures: dict[str, Any] = {}
    for method in ("rss", "tracemalloc"):
        for operation in ("store", "read"):  # read opens the blob the store step wrote
            result = measure_peak(operation, method, clip=clip, store=store, key=key)
            suffix = "_tracemalloc" if method == "tracemalloc" else ""
            figures[f"peak_{operation}_{label(size)}_mib{suffix}"] = result["peak_mib"]
            if method == "rss":
                figures["peak_method"] = result["method"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 MiB and 8 MiB clips, fewer runs")
    parser.add_argument("--child", choices=["store", "read"], help=argparse.SUPPRESS)
    parser.add_argument("--method", default="rss", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--blob", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.operation = args.child
        child(args)
        return

    sizes = [MiB, 8 * MiB] if args.quick else [MiB, 50 * MiB]
    repeats = {MiB: 7, 8 * MiB: 3, 50 * MiB: 5}
    big = label(sizes[-1])
    work = Path(tempfile.mkdtemp(prefix="tutela-bench-", dir="/tmp"))
    report: dict[str, Any] = {"bench": "vault", "quick": args.quick, "piece_mib": PIECE / MiB}
    try:
        for size in sizes:
            figures = throughput(size, work, repeats[size])
            report.update(figures)
            name = label(size)
            for op, what in (("store", "seal+store"), ("read", "read+open")):
                print(
                    f"{what:>10} {size // MiB:>3} MiB: {figures[f'{op}_{name}_mib_s']:8.1f} MiB/s"
                    f"   raw AES-GCM {figures[f'{op}_{name}_raw_mib_s']:8.1f} MiB/s"
                    f"   ratio {figures[f'{op}_{name}_ratio']:.2f}"
                )
        memory = peak_memory(sizes[-1], work)
        report.update(memory)
        print(f"peak memory ({PEAK_METHOD[memory['peak_method']]}):")
        for op in ("store", "read"):
            print(
                f"{op:>10} {sizes[-1] // MiB:>3} MiB: {memory[f'peak_{op}_{big}_mib']:6.1f} MiB"
                f" above baseline (tracemalloc peak"
                f" {memory[f'peak_{op}_{big}_mib_tracemalloc']:.1f} MiB)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report["peak_method_description"] = PEAK_METHOD[report["peak_method"]]
    report["goals"] = {
        "clip": big,
        f"store_{big}_ratio_min": GOAL_RATIO,
        f"read_{big}_ratio_min": GOAL_RATIO,
        f"peak_{big}_mib_max": GOAL_PEAK_MIB,
    }
    report["met"] = {
        f"store_{big}_ratio": report[f"store_{big}_ratio"] >= GOAL_RATIO,
        f"read_{big}_ratio": report[f"read_{big}_ratio"] >= GOAL_RATIO,
        f"peak_{big}_mib": max(report[f"peak_store_{big}_mib"], report[f"peak_read_{big}_mib"])
        <= GOAL_PEAK_MIB,
    }
    if args.quick:
        report["note"] = "quick run: goals are set for 50 MiB, checked here on 8 MiB"
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}))


if __name__ == "__main__":
    main()
