"""The consent page's history in words: who chose what, where and how, each batch of
events appended together as one line (C3, C6)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Final

from sqlalchemy.orm import Session

from tutela.consent import service
from tutela.consent.models import Channel, ConsentEvent, Method
from tutela.deps import AppContainer
from tutela.erasure.announce import asked_by
from tutela.identity.service import Principal

CHANNEL_WORDS: Final = {
    Channel.CONSOLE.value: "in the console",
    Channel.API.value: "in the app",
    Channel.DEVICE.value: "on a device",
    Channel.SYSTEM.value: "by Tutela",
}
METHOD_WORDS: Final = {
    Method.SIGNED_FORM.value: "with a signed consent form",
    Method.CARD_CHECK.value: "with a payment card check",
    Method.KNOWLEDGE_QUESTIONS.value: "by answering questions only a parent can",
    Method.ID_CHECK.value: "with an identity document check",
}


@dataclass(frozen=True)
class HistoryLine:
    """One choice as a parent reads it: events appended together are one line."""

    at: datetime
    who: str
    what: str
    how: str
    notice_version: int


def _who(session: Session, container: AppContainer, principal: Principal, actor: str) -> str:
    if actor.startswith("device:"):
        return "A device"
    if not actor.startswith("account:"):
        return "Tutela"
    words = asked_by(
        session,
        container.vault.keys,
        household_id=principal.household_id,
        requester_kind="guardian",
        requested_by=actor,
        viewer=service.actor_of(principal),
    )
    return words[:1].upper() + words[1:]


def history_lines(
    session: Session, container: AppContainer, principal: Principal, events: list[ConsentEvent]
) -> list[HistoryLine]:
    """`events` (newest first) as the lines a parent reads, named as `principal` sees."""
    ledger = container.consent
    lines: list[HistoryLine] = []
    names: dict[str, str] = {}

    def key(e: ConsentEvent) -> tuple[datetime, str, str, str, int]:
        return (e.at, e.actor, e.channel, e.method, e.notice_version)

    def title(name: str) -> str:
        return ledger.catalogue[name].title if name in ledger.catalogue else name

    for (at, actor, channel, method, version), group in groupby(events, key=key):
        batch = list(group)
        if method == Method.REFUSAL.value:
            what = "stopped all recording: every purpose turned off"
        else:
            on = ", ".join(title(e.purpose) for e in batch if e.granted)
            off = ", ".join(title(e.purpose) for e in batch if not e.granted)
            what = " and ".join(
                f"turned {word} {listed}" for word, listed in (("on", on), ("off", off)) if listed
            )
        if actor not in names:
            names[actor] = _who(session, container, principal, actor)
        how = CHANNEL_WORDS.get(channel, channel)
        if method in METHOD_WORDS:
            how += ", " + METHOD_WORDS[method]
        lines.append(
            HistoryLine(
                at=at,
                who=names[actor],
                what=what,
                how=how,
                notice_version=version,
            )
        )
    return lines
