"""Waking workers of other processes over PostgreSQL: NOTIFY at commit, LISTEN on a
connection of their own that survives being cut (A5, A8, S7).

`listener` plays another process's worker: a wake-up of its own, with its own connection.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.factories import make_home, seed_media
from tutela.container import Container
from tutela.erasure.models import RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.erasure.wake import LISTENER_NAME, Wakeup, wakeup_for

LONG = 30.0
"""Longer than any wake-up takes: a wait that returns True before it was woken."""
RULE = Requester(RequesterKind.RETENTION, "rule:test")


@pytest.fixture
def listener(container: Container, backend: str) -> Iterator[Wakeup]:
    if backend != "postgresql":
        pytest.skip("over SQLite only the recording process is woken; others poll")
    wakeup = wakeup_for(container.stores.main)
    # The first wait opens the connection, and wakes once for what came before it.
    assert wakeup.wait(LONG)
    yield wakeup
    wakeup.close()


def listener_pids(container: Container) -> set[int]:
    """Backends listening for erasure work on the main store, whoever opened them."""
    with container.stores.main.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = :name"
                    " AND datname = current_database()"
                ),
                {"name": LISTENER_NAME},
            ).scalars()
        )


def test_a_committed_request_wakes_another_process_and_a_rolled_back_one_does_not(
    container: Container, listener: Wakeup, unique: str
) -> None:
    home = make_home(container, tag=unique)
    voice = seed_media(container, home, voices=1, clips=0)["voice"]
    with container.stores.session() as session:
        container.erasure.wakeup.announce(session)
        session.rollback()
    assert listener.wait(0.5) is False

    container.erasure.request(
        Scope(
            ScopeKind.ITEMS,
            home.household_id,
            profile_id=home.child_profiles[0],
            item_ids=(*voice,),
        ),
        RULE,
    )
    assert listener.wait(LONG) is True


def test_a_listener_whose_connection_is_killed_listens_again(
    container: Container, listener: Wakeup
) -> None:
    (killed,) = listener_pids(container)
    with container.stores.main.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})
    # Back, it wakes once: a notification may have come while it was away.
    assert listener.wait(LONG) is True
    assert listener_pids(container) - {killed}

    with container.stores.session() as session:
        container.erasure.wakeup.announce(session)
        session.commit()
    assert listener.wait(LONG) is True
