"""Downstream consumers are told of each erasure by a signed webhook, over real HTTP (S7, A5).

A consumer that keeps failing holds the erasure back: retried with growing waits, then
dead-lettered, and the request is blocked, never called complete (A8), until an operator
fixes the consumer and retries.
"""

from __future__ import annotations

import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise

import pytest
from sqlalchemy import select, update

from tests.factories import make_home, seed_media
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.core.errors import InvalidInput
from tutela.erasure import downstream, receipts
from tutela.erasure.models import (
    DownstreamDelivery,
    ErasureRequest,
    RequesterKind,
    RequestStatus,
    ScopeKind,
)
from tutela.erasure.scope import Requester, Scope
from tutela.vault.models import MediaItem

GUARDIAN = Requester(RequesterKind.GUARDIAN, "account:test")


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Consumer:
    """A consumer's webhook endpoint on 127.0.0.1 that records what it is sent."""

    url: str
    status: int = 200
    received: list[Received] = field(default_factory=list)


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    state = Consumer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            state.received.append(
                Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            self.send_response(state.status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/tutela/erasures"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _register(container: Container, consumer: Consumer) -> str:
    with container.stores.session() as s:
        _, secret = downstream.register_consumer(
            s, container.vault.keys, name="analytics", url=consumer.url, now=container.clock.now()
        )
    return secret


def _row(container: Container, request_id: uuid.UUID) -> ErasureRequest:
    with container.stores.session() as s:
        row = s.get(ErasureRequest, request_id)
        assert row is not None
        return row


def _delivery(container: Container, request_id: uuid.UUID) -> DownstreamDelivery:
    with container.stores.session() as s:
        found = s.scalars(
            select(DownstreamDelivery).where(DownstreamDelivery.request_id == request_id)
        ).all()
    assert len(found) == 1
    return found[0]


def _stamp(received: Received) -> int:
    parts = dict(p.split("=", 1) for p in received.headers["tutela-signature"].split(","))
    return int(parts["t"])


def _item_erasure(container: Container, tag: str) -> tuple[ErasureRequest, set[str]]:
    home = make_home(container, tag=tag)
    made = seed_media(container, home)
    voice = made["voice"][0]
    row = container.erasure.request(
        Scope(ScopeKind.ITEM, home.household_id, item_id=voice), GUARDIAN
    )
    return row, {str(voice), str(made["transcript"][0])}


def _verified(container: Container, row: ErasureRequest) -> dict[str, object]:
    public = receipts.signing_key(container.vault.keys, now=container.clock.now()).public_key()
    return receipts.verify(json.loads(row.receipt or "{}"), public)


def test_a_consumer_receives_one_signed_notice_naming_the_erased_items(
    container: Container, consumer: Consumer
) -> None:
    assert isinstance(container.erasure.sender, downstream.HttpSender)
    secret = _register(container, consumer)
    row, erased = _item_erasure(container, "hook")

    assert container.erasure.run_pending().completed == 1

    assert len(consumer.received) == 1
    notice = consumer.received[0]
    assert notice.path == "/tutela/erasures"
    assert notice.headers["content-type"] == "application/json"
    payload = json.loads(notice.body)
    assert payload["type"] == "tutela.erasure"
    assert payload["request_id"] == str(row.id)
    assert set(payload["item_ids"]) == erased
    # The consumer checks the signature with its secret (HMAC-SHA256 over "t.body").
    signed_at = datetime.fromtimestamp(_stamp(notice), UTC)
    assert signed_at == container.clock.now().replace(microsecond=0)
    expected = downstream.signature(secret, notice.body, signed_at)
    assert hmac.compare_digest(notice.headers["tutela-signature"], expected)
    assert downstream.signature("another secret", notice.body, signed_at) != expected

    done = _row(container, row.id)
    assert done.status == "completed", done.findings
    check = _verified(container, done)["remnant_check"]
    assert isinstance(check, dict)
    assert check["result"] == "clean" and "downstream consumers" in check["stores"]
    delivered = _delivery(container, row.id)
    assert delivered.delivered_at is not None
    assert delivered.payload_sealed is None  # the ids it named are wiped once confirmed


def test_a_failing_consumer_is_retried_with_backoff_then_blocks_the_erasure(
    container: Container, clock: FakeClock, consumer: Consumer
) -> None:
    _register(container, consumer)
    consumer.status = 500
    row, erased = _item_erasure(container, "fail")

    report = container.erasure.run_pending()
    assert (report.completed, report.waiting) == (0, 1)
    assert len(consumer.received) == 1
    waiting = _row(container, row.id)
    assert (waiting.status, waiting.step, waiting.receipt) == ("running", "downstream", None)
    with container.stores.session() as s:
        left = s.scalars(select(MediaItem.id).where(MediaItem.id.in_(map(uuid.UUID, erased))))
        assert list(left) == []  # the items are gone already; the notice is what waits

    # Not due yet: nothing is sent before the first retry's time.
    clock.advance(downstream.retry_delay(1) - timedelta(seconds=1))
    assert container.erasure.run_pending().waiting == 0
    assert len(consumer.received) == 1

    while len(consumer.received) < downstream.MAX_ATTEMPTS:
        delivery = _delivery(container, row.id)
        clock.set(delivery.next_attempt_at)
        container.erasure.run_pending()
        assert len(consumer.received) == delivery.attempts + 1

    stamps = [_stamp(r) for r in consumer.received]
    gaps = [later - earlier for earlier, later in pairwise(stamps)]
    assert gaps == [
        int(downstream.retry_delay(n).total_seconds()) for n in range(1, downstream.MAX_ATTEMPTS)
    ]
    assert gaps == sorted(gaps) and gaps[0] < gaps[-1]

    dead = _delivery(container, row.id)
    assert dead.dead_at is not None and dead.attempts == downstream.MAX_ATTEMPTS
    blocked = _row(container, row.id)
    assert blocked.status == "blocked"
    assert blocked.receipt is None and blocked.completed_at is None
    assert blocked.last_error == "downstream_dead_letter"

    # Blocked stays blocked: no worker pass calls it deleted or sends again on its own.
    clock.advance(timedelta(days=1))
    container.erasure.retry_downstream()
    assert container.erasure.run_pending().completed == 0
    assert len(consumer.received) == downstream.MAX_ATTEMPTS
    assert _row(container, row.id).status == "blocked"

    # The operator fixes the consumer and retries (what `tutela erasure retry-dead` does).
    consumer.status = 204
    now = clock.now()
    with container.stores.session() as s:
        assert downstream.retry_dead(s, now=now, request_id=row.id) == 1
        s.execute(
            update(ErasureRequest)
            .where(ErasureRequest.id == row.id, ErasureRequest.status == RequestStatus.BLOCKED)
            .values(status=RequestStatus.RUNNING, next_run_at=now)
        )
        s.commit()
    assert container.erasure.run_pending().completed == 1
    assert len(consumer.received) == downstream.MAX_ATTEMPTS + 1
    done = _row(container, row.id)
    assert done.status == "completed", done.findings
    assert _verified(container, done)["counts"] == {"voice": 1, "transcript": 1}
    assert _delivery(container, row.id).delivered_at == now


def test_a_redirect_is_not_a_confirmation(container: Container, consumer: Consumer) -> None:
    """A 3xx (to a login page, say) would turn the POST into a GET: it is a failure."""
    consumer.status = 302
    _register(container, consumer)
    row, _ = _item_erasure(container, "redirect")
    container.erasure.run_pending()
    assert _row(container, row.id).status != "completed"
    delivery = _delivery(container, row.id)
    assert delivery.delivered_at is None
    assert delivery.last_error == "http_302"
    assert delivery.payload_sealed is not None
    assert [r.path for r in consumer.received] == ["/tutela/erasures"]


@pytest.mark.parametrize(
    "url", ["http://analytics.example.com/hook", "ftp://127.0.0.1/hook", "https:///nohost"]
)
def test_consumers_are_reached_over_tls_only(container: Container, url: str) -> None:
    with container.stores.session() as s, pytest.raises(InvalidInput) as refused:
        downstream.register_consumer(
            s, container.vault.keys, name="x", url=url, now=container.clock.now()
        )
    assert refused.value.code == "invalid_url"
