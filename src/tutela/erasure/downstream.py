"""Telling downstream consumers of each erasure (S7: tell each recipient; A5).

A consumer is a system outside Tutela that keeps copies (an analytics store, a support
tool). Each completed erasure sends it one signed webhook naming the ids to delete. A
failed delivery is retried with exponential backoff; after `MAX_ATTEMPTS` it moves to
the dead-letter list, and the erasure stays blocked (not complete) until an operator
fixes the consumer and retries: nothing is called deleted while a copy may remain (A8).

The payload is sealed at rest and wiped once the consumer has confirmed (any 2xx).
Signature: `Tutela-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "t.body")>`,
the scheme Stripe and others use, so consumers can refuse replays older than a window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tutela.core.errors import Conflict, InvalidInput
from tutela.core.ids import uuid7
from tutela.db.engine import Stores
from tutela.erasure.models import DownstreamConsumer, DownstreamDelivery
from tutela.vault import crypto
from tutela.vault.keystore import KeyStore

DOWNSTREAM_KEY: Final = "downstream"
MAX_ATTEMPTS: Final = 8
FIRST_RETRY: Final = timedelta(seconds=30)
LONGEST_RETRY: Final = timedelta(hours=1)
log = logging.getLogger("tutela.erasure.downstream")


class WebhookSender(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST `body`; return the HTTP status. Raise on a network failure."""
        ...


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is not a confirmation: urllib would turn the POST into a GET and count
    the login page's 200 as the consumer's."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpSender:
    """Webhooks over HTTP(S) with the standard library, with a timeout and no redirects
    (a 3xx counts as a failure and is retried)."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirects)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))  # noqa: S310 (scheme checked at registration)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


class LineageHook(Protocol):
    """Called once per erasure with what was erased, before the webhooks: training sets
    and models built from these items must be tainted (the lineage part, DESIGN idea 3).
    Must be idempotent: a restarted job calls it again."""

    def erased(
        self,
        *,
        request_id: uuid.UUID,
        household_id: uuid.UUID,
        profile_ids: Sequence[uuid.UUID],
        item_ids: Sequence[uuid.UUID],
    ) -> None: ...


@dataclass(frozen=True)
class Pending:
    waiting: int
    dead: int
    next_attempt_at: datetime | None


def _aad(delivery_id: uuid.UUID) -> bytes:
    return b"tutela:downstream:" + delivery_id.bytes


def _secret_aad(consumer_id: uuid.UUID) -> bytes:
    return b"tutela:downstream-secret:" + consumer_id.bytes


def register_consumer(
    session: Session, keys: KeyStore, *, name: str, url: str, now: datetime
) -> tuple[DownstreamConsumer, str]:
    """Add a consumer; returns it and its signing secret (shown once)."""
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    # The payload names whose data to delete: only over TLS, except to this machine.
    if (
        not parts.hostname
        or len(url) > 500
        or not (parts.scheme == "https" or (parts.scheme == "http" and loopback))
    ):
        raise InvalidInput(
            "A consumer's address is an https URL (http only on this machine).",
            code="invalid_url",
        )
    if not name or len(name) > 80 or not name.isprintable():
        raise InvalidInput("A consumer needs a short printable name.", code="invalid_name")
    secret = secrets.token_urlsafe(32)
    consumer_id = uuid7()
    consumer = DownstreamConsumer(
        id=consumer_id,
        name=name,
        url=url,
        secret_sealed=crypto.seal(
            keys.service_key(DOWNSTREAM_KEY, now=now), secret.encode(), aad=_secret_aad(consumer_id)
        ),
        created_at=now,
    )
    session.add(consumer)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict("A consumer of that name exists.", code="consumer_exists") from None
    return consumer, secret


def enqueue(
    session: Session,
    keys: KeyStore,
    *,
    request_id: uuid.UUID,
    payload: Mapping[str, Any],
    now: datetime,
) -> int:
    """One delivery per active consumer for this request (again: no duplicates)."""
    have = set(
        session.scalars(
            select(DownstreamDelivery.consumer_id).where(
                DownstreamDelivery.request_id == request_id
            )
        )
    )
    consumers = session.scalars(
        select(DownstreamConsumer).where(DownstreamConsumer.disabled_at.is_(None))
    ).all()
    key = keys.service_key(DOWNSTREAM_KEY, now=now)
    body = json.dumps(payload, sort_keys=True).encode()
    added = 0
    for consumer in consumers:
        if consumer.id in have:
            continue
        delivery_id = uuid7()
        session.add(
            DownstreamDelivery(
                id=delivery_id,
                request_id=request_id,
                consumer_id=consumer.id,
                payload_sealed=crypto.seal(key, body, aad=_aad(delivery_id)),
                attempts=0,
                next_attempt_at=now,
            )
        )
        added += 1
    session.commit()
    return added


def signature(secret: str, body: bytes, at: datetime) -> str:
    stamp = str(int(at.timestamp()))
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def retry_delay(attempts: int) -> timedelta:
    return min(FIRST_RETRY * (1 << max(0, attempts - 1)), LONGEST_RETRY)


def deliver_due(
    stores: Stores,
    keys: KeyStore,
    sender: WebhookSender,
    *,
    now: datetime,
    request_id: uuid.UUID | None = None,
    batch: int = 50,
) -> int:
    """Try the due deliveries (of one request, or all); return how many were confirmed."""
    delivered = 0
    key = keys.service_key(DOWNSTREAM_KEY, now=now)
    postgresql = stores.main.dialect.name == "postgresql"
    with stores.session() as session:
        query = (
            select(DownstreamDelivery, DownstreamConsumer)
            .join(DownstreamConsumer, DownstreamConsumer.id == DownstreamDelivery.consumer_id)
            .where(
                DownstreamDelivery.delivered_at.is_(None),
                DownstreamDelivery.dead_at.is_(None),
                DownstreamDelivery.next_attempt_at <= now,
            )
            .order_by(DownstreamDelivery.next_attempt_at)
            .limit(batch)
        )
        if request_id is not None:
            query = query.where(DownstreamDelivery.request_id == request_id)
        if postgresql:
            query = query.with_for_update(skip_locked=True, of=DownstreamDelivery)
        for delivery, consumer in session.execute(query).all():
            if _deliver(keys, sender, key, delivery, consumer, now=now):
                delivered += 1
        session.commit()
    return delivered


def _deliver(
    keys: KeyStore,
    sender: WebhookSender,
    key: bytes,
    delivery: DownstreamDelivery,
    consumer: DownstreamConsumer,
    *,
    now: datetime,
) -> bool:
    assert delivery.payload_sealed is not None
    body = crypto.open_sealed(key, delivery.payload_sealed, aad=_aad(delivery.id))
    secret = crypto.open_sealed(
        keys.service_key(DOWNSTREAM_KEY, now=now),
        consumer.secret_sealed,
        aad=_secret_aad(consumer.id),
    ).decode()
    headers = {
        "Content-Type": "application/json",
        "Tutela-Signature": signature(secret, body, now),
        "Tutela-Delivery": str(delivery.id),
    }
    try:
        status = sender.post(consumer.url, body, headers)
        error = None if 200 <= status < 300 else f"http_{status}"
    except Exception as exc:  # the consumer's failure is retried, never raised
        error = type(exc).__name__
    delivery.attempts += 1
    if error is None:
        delivery.delivered_at = now
        delivery.payload_sealed = None
        delivery.last_error = None
        return True
    delivery.last_error = error[:80]
    if delivery.attempts >= MAX_ATTEMPTS:
        delivery.dead_at = now
        log.warning("downstream delivery dead-lettered after %d attempts", delivery.attempts)
    else:
        delivery.next_attempt_at = now + retry_delay(delivery.attempts)
    return False


def pending(session: Session, *, request_id: uuid.UUID) -> Pending:
    waiting, dead, soonest = session.execute(
        select(
            func.count().filter(DownstreamDelivery.dead_at.is_(None)),
            func.count().filter(DownstreamDelivery.dead_at.is_not(None)),
            func.min(DownstreamDelivery.next_attempt_at).filter(
                DownstreamDelivery.dead_at.is_(None)
            ),
        ).where(
            DownstreamDelivery.request_id == request_id, DownstreamDelivery.delivered_at.is_(None)
        )
    ).one()
    return Pending(waiting=int(waiting or 0), dead=int(dead or 0), next_attempt_at=soonest)


def retry_dead(session: Session, *, now: datetime, request_id: uuid.UUID | None = None) -> int:
    """Give dead-lettered deliveries a fresh set of attempts (after the consumer is fixed)."""
    query = select(DownstreamDelivery).where(DownstreamDelivery.dead_at.is_not(None))
    if request_id is not None:
        query = query.where(DownstreamDelivery.request_id == request_id)
    rows = session.scalars(query).all()
    for row in rows:
        row.dead_at = None
        row.attempts = 0
        row.next_attempt_at = now
    session.commit()
    return len(rows)
