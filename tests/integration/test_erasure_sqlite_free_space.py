"""Household closures on the embedded store complete clean, one after another (A8, C1,
C10, S6).

Homes with several adults, children, devices and items, made and closed in turn beside
their neighbours, split and rebalance the b-tree pages they share: SQLite then leaves
earlier copies of cells in the unallocated space of rebalanced pages, which
`secure_delete` never zeroes. The raw scan finds them; the free space is rewritten
before anything is called a remnant, so no closure fails on them.
"""

from __future__ import annotations

import json
from datetime import date

import pytest

from tests.factories import grant_parental_consent, password_hash, seed_media
from tutela.container import Container
from tutela.erasure import receipts
from tutela.erasure.models import ErasureRequest, RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.households import service as households
from tutela.households.models import AccountRole
from tutela.households.service import AdultSpec, ChildSpec, CreatedHome, DeviceSpec, HomeSpec

CLOSURES = 50
CLOSURE = Requester(RequesterKind.ACCOUNT_CLOSURE, "account:owner")


def _full_home(container: Container, tag: str) -> CreatedHome:
    """Two adults with accounts, three children, four devices; every profile with voice
    recordings and their transcripts, a clip with its thumbnail, and a location batch."""
    owner, other = f"owner.{tag}@example.com", f"other.{tag}@example.com"
    spec = HomeSpec(
        adults=(
            AdultSpec("Ana Marchetti", owner, password_hash(container), AccountRole.OWNER),
            AdultSpec("Bruno Marchetti", other, password_hash(container)),
        ),
        children=tuple(
            ChildSpec(name, date(2016 + n, 3, 14), (owner, other))
            for n, name in enumerate(("Lily Marchetti", "Tom Marchetti", "Eva Marchetti"))
        ),
        devices=(
            DeviceSpec("voice", "Kitchen speaker"),
            DeviceSpec("voice", "Bedroom speaker"),
            DeviceSpec("camera", "Nursery camera", "nursery"),
            DeviceSpec("phone", "Family phone"),
        ),
    )
    with container.stores.session() as session:
        home = households.create_home(
            session, container.vault.keys, spec=spec, now=container.clock.now()
        )
    for child in home.child_profiles:
        grant_parental_consent(container, home, child=child)
    for profile in [*home.child_profiles, *home.adult_profiles.values()]:
        seed_media(container, home, profile=profile, voices=3, clips=1)
    return home


def test_fifty_household_closures_in_a_row_all_complete_clean(
    container: Container, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("page free space of the embedded store's files")
    assert container.settings.erasure_raw_scan
    public_key = receipts.signing_key(container.vault.keys, now=container.clock.now()).public_key()
    homes = [_full_home(container, f"neighbour{n}") for n in range(4)]
    not_clean = []
    for n in range(CLOSURES):
        homes.append(_full_home(container, f"home{n}"))
        closed = homes.pop(n % 3)
        row = container.erasure.request(Scope(ScopeKind.HOUSEHOLD, closed.household_id), CLOSURE)
        container.erasure.run_pending()
        with container.stores.session() as s:
            done = s.get(ErasureRequest, row.id)
            assert done is not None
            if done.status != "completed" or done.verify_failures or done.receipt is None:
                not_clean.append((n, done.status, done.verify_failures, done.findings))
                continue
            receipt = json.loads(done.receipt)
        check = receipts.verify(receipt, public_key)["remnant_check"]
        assert check["result"] == "clean"
        assert {"main database file", "key store file"} <= set(check["stores"])
    assert not not_clean, f"closures not clean at the first check: {not_clean}"
