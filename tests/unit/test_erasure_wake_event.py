"""The in-process wake-up of erasure workers: what a waiting worker sees (A5, A8, S7)."""

from __future__ import annotations

import threading
import time

from tutela.erasure.wake import LocalWakeup

LONG = 30.0
"""A poll interval no test waits out: returning before it means the worker was woken."""


def _waiting(wakeup: LocalWakeup) -> tuple[threading.Thread, list[float]]:
    took: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        assert wakeup.wait(LONG)
        took.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    return waiter, took


def test_a_waiting_worker_wakes_when_work_arrives_not_at_the_poll() -> None:
    wakeup = LocalWakeup()
    waiter, took = _waiting(wakeup)
    time.sleep(0.05)
    wakeup.local()
    waiter.join(timeout=5)
    assert took and took[0] < LONG / 2


def test_work_that_arrived_during_a_pass_wakes_the_next_wait_and_only_that_one() -> None:
    wakeup = LocalWakeup()
    wakeup.local()  # a request recorded while the worker was busy
    assert wakeup.wait(LONG) is True
    assert wakeup.wait(0.05) is False


def test_without_work_the_wait_ends_at_the_poll_interval() -> None:
    assert LocalWakeup().wait(0.05) is False


def test_closing_releases_a_waiting_worker() -> None:
    wakeup = LocalWakeup()
    waiter, took = _waiting(wakeup)
    time.sleep(0.05)
    wakeup.close()
    waiter.join(timeout=5)
    assert took and took[0] < LONG / 2
