"""The attacker: one separate process replaying the list over raw HTTP/1.1 connections."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from stuffing_common import ATTACKER_AGENT, CODE, DEFENDED_KEY, SIGN_IN, classify


class RawConnection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON: the attacker's client.

    httpx costs several milliseconds of CPU per request, and the attacker's client runs on
    the server's two cores (a real one would not): this one costs a fraction of that.
    uvicorn answers these requests with a Content-Length, which is all it reads.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(
        self, method: str, path: str, payload: Any, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        body = b"" if payload is None else json.dumps(payload).encode()
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        try:
            self.writer.write(head.encode() + b"\r\n" + body)
            lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            answer_headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                answer_headers[name.strip().lower()] = value.strip()
            raw = await self.reader.readexactly(int(answer_headers.get("content-length", "0")))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            raise
        if answer_headers.get("connection", "").lower() == "close":
            self.close()
        try:
            return status, answer_headers, json.loads(raw) if raw else None
        except ValueError:
            return status, answer_headers, None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def watch_defended(
    config: dict[str, Any], seen: dict[str, float], done: asyncio.Event
) -> None:
    """Note when defended mode first shows in Redis, and when it was switched on."""
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(config["redis_url"])
    try:
        while not done.is_set():
            value = await client.get(DEFENDED_KEY)
            if value is not None:
                # The key holds "on until": the switch was defended_seconds before it (or a
                # little later, if an attempt in between extended it).
                seen["until"] = float(value)
                seen["switched_at"] = float(value) - config["defended_seconds"]
                seen["seen_at"] = time.time()
                return
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()


async def attack(config: dict[str, Any]) -> dict[str, Any]:
    """Replay the list (or a burst of it) over `connections`; one answer per pair."""
    data = json.loads(Path(config["list"]).read_text())
    emails, passwords = data["emails"], data["passwords"]
    sources, source_of = data["sources"], data["source_of"]
    rng = random.Random(config.get("seed", 0))
    burst_sources = config.get("burst_sources")
    count = len(emails)
    outcomes = bytearray(count)
    sent_at = [0.0] * count
    done_at = [0.0] * count
    blocked_until: dict[str, float] = {}
    host, port = config["base_url"].removeprefix("http://").rsplit(":", 1)
    seen: dict[str, float] = {}
    finished = asyncio.Event()
    monitor = None
    if config.get("watch"):
        monitor = asyncio.create_task(watch_defended(config, seen, finished))
    floor = bool(config.get("floor"))  # GET /healthz instead: the HTTP stack's own cost

    def pair(n: int) -> dict[str, str]:
        return {"email": emails[n], "password": passwords[n]}

    cpu0 = time.process_time()
    busy = [0]
    issued = iter(range(count))
    deadline = time.perf_counter() + config["limit_s"]

    async def connection() -> None:
        raw = RawConnection(host, int(port))
        try:
            for n in issued:
                if time.perf_counter() > deadline:
                    return
                source = rng.choice(burst_sources) if burst_sources else sources[source_of[n]]
                sent_at[n] = time.time()
                try:
                    status, headers, body = await raw.send(
                        *(("GET", "/healthz", None) if floor else ("POST", SIGN_IN, pair(n))),
                        {"x-forwarded-for": source, "user-agent": ATTACKER_AGENT},
                    )
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    outcomes[n] = CODE["other"]
                    done_at[n] = time.time()
                    continue
                outcome = classify(status, body)
                if status == 429 and isinstance(body, dict) and body.get("code") == "sign_in_busy":
                    busy[0] += 1  # refused by admission at the route, not by the door
                outcomes[n] = CODE[outcome]
                done_at[n] = time.time()
                if outcome == "too_many_attempts":
                    wait = float(headers.get("retry-after", "0"))
                    blocked_until[source] = max(blocked_until.get(source, 0.0), done_at[n] + wait)
        finally:
            raw.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(config["connections"])))
    elapsed = time.perf_counter() - started
    finished.set()
    if monitor is not None:
        await monitor
    return {
        "outcomes": list(outcomes),
        "sent_at": sent_at,
        "done_at": done_at,
        "elapsed_s": elapsed,
        "client_cpu_s": time.process_time() - cpu0,
        "defended": seen,
        "blocked_until": blocked_until,
        "busy": busy[0],
    }


def attacker_main() -> None:
    config = json.loads(sys.stdin.readline())
    with suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    result = asyncio.run(attack(config))
    # A file, not stdout: the event loop may leave stdout non-blocking, and a result of
    # several hundred KiB then reached the orchestrator cut at 128 KiB.
    Path(config["result"]).write_text(json.dumps(result))


def run_attacker(config: dict[str, Any]) -> dict[str, Any]:
    """One attacker process over `config`; what it saw."""
    result_path = Path(config["list"]).with_suffix(".result.json")
    result_path.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, __file__],
        input=json.dumps({**config, "result": str(result_path)}) + "\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=config["limit_s"] + 300,
    )
    if done.returncode != 0 or not result_path.exists():
        raise RuntimeError("the attacker process failed:\n" + done.stderr[-3000:])
    result: dict[str, Any] = json.loads(result_path.read_text())
    result_path.unlink()
    return result


if __name__ == "__main__":
    attacker_main()
