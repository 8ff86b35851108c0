"""Second factors on SQLite and PostgreSQL: TOTP, WebAuthn, recovery codes (R4, R5, S4)."""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TypeVar

import pyotp
import pytest
from sqlalchemy import select, text

from tests.factories import make_home
from tests.softauthn import AuthenticatorRefused, SoftAuthenticator
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.core.errors import Conflict, InvalidInput, NotFound
from tutela.identity import factors
from tutela.identity.models import Factor, StaffMember
from tutela.identity.owners import Owner

RP_ID = "tutela.example.com"
ORIGIN = "https://tutela.example.com"
PHISHING_ORIGIN = "https://tutela-login.example.net"
TTL = timedelta(minutes=5)
T = TypeVar("T")


# --- owners ------------------------------------------------------------------------------


def _account(container: Container, tag: str) -> Owner:
    home = make_home(container, tag=tag)
    email = f"ana.{tag}@example.com"
    return Owner.account(home.household_id, home.accounts[email], home.adult_profiles[email])


def _staff(container: Container) -> Owner:
    now = container.clock.now()
    staff_id = uuid.uuid4()
    with container.stores.session() as s:
        s.add(
            StaffMember(
                id=staff_id,
                email_index=uuid.uuid4().bytes,
                email_sealed=b"\x01sealed",
                roles="support",
                password_hash="$argon2id$placeholder",
                password_updated_at=now,
                password_must_change=False,
                created_at=now,
            )
        )
        s.commit()
    return Owner.staff(staff_id)


@pytest.fixture
def owner(container: Container, unique: str) -> Owner:
    return _account(container, unique)


@pytest.fixture
def other(container: Container, unique: str) -> Owner:
    return _account(container, unique + "b")


def _race(attempt: Callable[[], T], *, runners: int = 4) -> list[T]:
    """Run `attempt` in several threads at once, each with its own session and commit."""
    gate = threading.Barrier(runners)

    def run() -> T:
        gate.wait()
        return attempt()

    with ThreadPoolExecutor(runners) as pool:
        return list(pool.map(lambda _: run(), range(runners)))


# --- TOTP helpers --------------------------------------------------------------------------


def _enrol_totp(container: Container, owner: Owner) -> tuple[uuid.UUID, pyotp.TOTP]:
    now = container.clock.now()
    with container.stores.session() as s:
        enrolment = factors.begin_totp(
            s, container.vault.keys, owner, label="Phone", account_name="ana", now=now
        )
        s.commit()
    app = pyotp.TOTP(enrolment.secret)
    with container.stores.session() as s:
        factors.confirm_totp(
            s, container.vault.keys, owner, enrolment.factor_id, app.at(now), now=now
        )
        s.commit()
    return enrolment.factor_id, app


def _sign_in_totp(container: Container, owner: Owner, code: str) -> Factor | None:
    with container.stores.session() as s:
        found = factors.verify_totp(s, container.vault.keys, owner, code, now=container.clock.now())
        s.commit()
    return found


# --- TOTP ------------------------------------------------------------------------------------


def test_totp_enrolment_gives_an_app_uri_and_a_second_factor(
    container: Container, owner: Owner
) -> None:
    now = container.clock.now()
    with container.stores.session() as s:
        enrolment = factors.begin_totp(
            s, container.vault.keys, owner, label="Phone", account_name="ana@example.com", now=now
        )
        s.commit()
    assert re.fullmatch(r"[A-Z2-7]{32}", enrolment.secret)  # 160 bits, base32
    assert enrolment.provisioning_uri.startswith("otpauth://totp/Tutela:ana%40example.com?")
    assert f"secret={enrolment.secret}" in enrolment.provisioning_uri
    with container.stores.session() as s:
        assert not factors.has_second_factor(s, owner)  # not until a code confirms it
        assert factors.list_factors(s, owner) == []

    code = pyotp.TOTP(enrolment.secret).at(now)
    with container.stores.session() as s:
        factor = factors.confirm_totp(
            s, container.vault.keys, owner, enrolment.factor_id, code, now=now
        )
        s.commit()
    assert factor.confirmed_at == now
    with container.stores.session() as s:
        assert factors.has_second_factor(s, owner)
        assert not factors.has_webauthn(s, owner)
        assert [f.label for f in factors.list_factors(s, owner)] == ["Phone"]


def test_totp_code_is_accepted_once(container: Container, clock: FakeClock, owner: Owner) -> None:
    factor_id, app = _enrol_totp(container, owner)
    clock.advance(timedelta(seconds=30))
    code = app.at(clock.now())

    found = _sign_in_totp(container, owner, code)
    assert found is not None and found.id == factor_id
    assert found.last_used_at == clock.now()
    assert _sign_in_totp(container, owner, code) is None  # replayed
    # An older code still inside the window is refused too once a newer step was used.
    assert _sign_in_totp(container, owner, app.at(clock.now() - timedelta(seconds=30))) is None

    clock.advance(timedelta(seconds=30))
    assert _sign_in_totp(container, owner, app.at(clock.now())) is not None


def test_confirming_code_cannot_sign_in(container: Container, owner: Owner) -> None:
    _, app = _enrol_totp(container, owner)
    assert _sign_in_totp(container, owner, app.at(container.clock.now())) is None


def test_a_replay_racing_the_first_use_is_refused_by_the_database(
    container: Container, clock: FakeClock, owner: Owner
) -> None:
    factor_id, app = _enrol_totp(container, owner)
    clock.advance(timedelta(seconds=30))
    code = app.at(clock.now())
    with container.stores.session() as late:
        # The late request read the factor before the first one committed...
        stale = late.get(Factor, factor_id)
        assert stale is not None
        assert _sign_in_totp(container, owner, code) is not None
        # ...so its copy still shows the old step; the conditional UPDATE refuses anyway.
        assert factors.verify_totp(late, container.vault.keys, owner, code, now=clock.now()) is None


def test_concurrent_uses_of_one_code_let_one_through(
    container: Container, clock: FakeClock, owner: Owner
) -> None:
    _, app = _enrol_totp(container, owner)
    clock.advance(timedelta(seconds=30))
    code = app.at(clock.now())
    results = _race(lambda: _sign_in_totp(container, owner, code))
    assert sum(r is not None for r in results) == 1


def test_wrong_or_malformed_codes_are_refused(container: Container, owner: Owner) -> None:
    now = container.clock.now()
    with container.stores.session() as s:
        enrolment = factors.begin_totp(
            s, container.vault.keys, owner, label="Phone", account_name="ana", now=now
        )
        s.commit()
    app = pyotp.TOTP(enrolment.secret)
    wrong = f"{(int(app.at(now)) + 1) % 1_000_000:06d}"
    with container.stores.session() as s, pytest.raises(InvalidInput) as err:
        factors.confirm_totp(s, container.vault.keys, owner, enrolment.factor_id, wrong, now=now)
    assert err.value.code == "invalid_code"
    with container.stores.session() as s:
        assert not factors.has_second_factor(s, owner)
        # A pending factor signs nobody in, even with its right code.
        assert factors.verify_totp(s, container.vault.keys, owner, app.at(now), now=now) is None

    _, app = _enrol_totp(container, owner)
    later = now + timedelta(seconds=60)
    for code in ["", "12345", "1234567", "abcdef", f"{app.at(later)}0"]:
        with container.stores.session() as s:
            assert factors.verify_totp(s, container.vault.keys, owner, code, now=later) is None


def test_totp_secret_is_sealed_at_rest(container: Container, owner: Owner) -> None:
    now = container.clock.now()
    with container.stores.session() as s:
        enrolment = factors.begin_totp(
            s, container.vault.keys, owner, label="Phone", account_name="ana", now=now
        )
        s.commit()
    raw_secret = base64.b32decode(enrolment.secret)
    with container.stores.session() as s:
        table = Factor.__table__
        row = s.execute(select(table).where(table.c.id == enrolment.factor_id)).one()
    stored = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in row if v is not None)
    assert stored  # the row was found
    for needle in (raw_secret, enrolment.secret.encode(), enrolment.secret.lower().encode()):
        assert needle not in stored


def test_at_most_five_totp_factors(container: Container, owner: Owner) -> None:
    now = container.clock.now()
    with container.stores.session() as s:
        for n in range(factors.MAX_TOTP_FACTORS):
            factors.begin_totp(
                s, container.vault.keys, owner, label=f"App {n}", account_name="ana", now=now
            )
        with pytest.raises(Conflict) as err:
            factors.begin_totp(
                s, container.vault.keys, owner, label="One more", account_name="ana", now=now
            )
    assert err.value.code == "too_many_factors"


def test_abandoned_enrolment_expires(container: Container, clock: FakeClock, owner: Owner) -> None:
    now = clock.now()
    with container.stores.session() as s:
        enrolment = factors.begin_totp(
            s, container.vault.keys, owner, label="Phone", account_name="ana", now=now
        )
        s.commit()
    clock.advance(factors.TOTP_ENROLMENT_TTL + timedelta(minutes=1))
    code = pyotp.TOTP(enrolment.secret).at(clock.now())
    with container.stores.session() as s, pytest.raises(InvalidInput) as err:
        factors.confirm_totp(
            s, container.vault.keys, owner, enrolment.factor_id, code, now=clock.now()
        )
    assert err.value.code == "enrolment_expired"


def test_totp_factor_of_another_owner_cannot_be_confirmed(
    container: Container, owner: Owner, other: Owner
) -> None:
    now = container.clock.now()
    with container.stores.session() as s:
        enrolment = factors.begin_totp(
            s, container.vault.keys, owner, label="Phone", account_name="ana", now=now
        )
        s.commit()
    code = pyotp.TOTP(enrolment.secret).at(now)
    with container.stores.session() as s, pytest.raises(NotFound):
        factors.confirm_totp(s, container.vault.keys, other, enrolment.factor_id, code, now=now)


# --- WebAuthn helpers ------------------------------------------------------------------------


def _register(
    container: Container, owner: Owner, key: SoftAuthenticator, *, label: str = "Security key"
) -> Factor:
    now = container.clock.now()
    with container.stores.session() as s:
        token, options = factors.registration_options(
            s,
            owner,
            user_name="ana",
            display_name="Ana",
            rp_id=RP_ID,
            rp_name="Tutela",
            now=now,
            ttl=TTL,
        )
        s.commit()
    credential = key.create(options)
    with container.stores.session() as s:
        factor = factors.finish_registration(
            s,
            owner,
            token=token,
            credential=credential,
            rp_id=RP_ID,
            origin=ORIGIN,
            label=label,
            now=now,
        )
        s.commit()
    return factor


def _assert(
    container: Container,
    owner: Owner,
    key: SoftAuthenticator,
    *,
    origin: str | None = None,
    credential_id: bytes | None = None,
) -> Factor:
    with container.stores.session() as s:
        challenge, options = factors.authentication_options(s, owner, rp_id=RP_ID)
    answer = key.get(options, origin=origin, credential_id=credential_id)
    return _verify(container, owner, challenge, answer)


def _verify(
    container: Container, owner: Owner, challenge: bytes, answer: dict[str, object]
) -> Factor:
    with container.stores.session() as s:
        factor = factors.verify_assertion(
            s,
            owner,
            challenge=challenge,
            credential=answer,
            rp_id=RP_ID,
            origin=ORIGIN,
            now=container.clock.now(),
        )
        s.commit()
    return factor


def _refused(call: object) -> None:
    assert callable(call)
    with pytest.raises(InvalidInput) as err:
        call()
    assert err.value.code == "webauthn_failed"
    # The library's own explanation never reaches the answer.
    assert err.value.detail == "The security key's answer was not accepted."


# --- WebAuthn ------------------------------------------------------------------------------


def test_security_key_registers_then_signs_in(
    container: Container, clock: FakeClock, owner: Owner
) -> None:
    key = SoftAuthenticator(RP_ID, ORIGIN)
    factor = _register(container, owner, key)
    assert factor.kind == "webauthn"
    assert factor.confirmed_at == clock.now()
    assert factor.credential_id in key.credentials
    assert factor.sign_count == 0
    with container.stores.session() as s:
        assert factors.has_webauthn(s, owner)
        assert factors.has_second_factor(s, owner)
        _, options = factors.authentication_options(s, owner, rp_id=RP_ID)
    request = json.loads(options)
    assert request["userVerification"] == "required"
    assert [c["id"] for c in request["allowCredentials"]] == [
        base64.urlsafe_b64encode(factor.credential_id or b"").rstrip(b"=").decode()
    ]

    clock.advance(timedelta(minutes=1))
    used = _assert(container, owner, key)
    assert used.id == factor.id
    assert used.sign_count == 1
    assert used.last_used_at == clock.now()
    assert _assert(container, owner, key).sign_count == 2


def test_registration_options_exclude_existing_credentials(
    container: Container, owner: Owner
) -> None:
    key = SoftAuthenticator(RP_ID, ORIGIN)
    factor = _register(container, owner, key)
    with container.stores.session() as s:
        _, options = factors.registration_options(
            s,
            owner,
            user_name="ana",
            display_name="Ana",
            rp_id=RP_ID,
            rp_name="Tutela",
            now=container.clock.now(),
            ttl=TTL,
        )
    request = json.loads(options)
    # The user handle is the owner's random one, the same as their first credential's,
    # never the account id (WebAuthn §14.6.1).
    assert factor.user_handle is not None
    handle = base64.urlsafe_b64encode(factor.user_handle).rstrip(b"=").decode()
    assert request["user"]["id"] == handle
    assert handle != base64.urlsafe_b64encode(owner.id.bytes).rstrip(b"=").decode()
    assert request["authenticatorSelection"]["userVerification"] == "preferred"
    assert len(request["excludeCredentials"]) == 1
    assert factor.credential_id in key.credentials
    with pytest.raises(AuthenticatorRefused):
        key.create(options)  # the same key is not registered twice


def test_registration_ceremony_is_single_use(container: Container, owner: Owner) -> None:
    key = SoftAuthenticator(RP_ID, ORIGIN)
    now = container.clock.now()
    with container.stores.session() as s:
        token, options = factors.registration_options(
            s,
            owner,
            user_name="ana",
            display_name="Ana",
            rp_id=RP_ID,
            rp_name="Tutela",
            now=now,
            ttl=TTL,
        )
        s.commit()
    first, second = key.create(options), key.create(options)

    def finish(credential: dict[str, object]) -> Factor:
        with container.stores.session() as s:
            factor = factors.finish_registration(
                s,
                owner,
                token=token,
                credential=credential,
                rp_id=RP_ID,
                origin=ORIGIN,
                label="Key",
                now=now,
            )
            s.commit()
        return factor

    finish(first)
    _refused(lambda: finish(second))
    _refused(lambda: finish(first))
    with container.stores.session() as s:
        assert len(factors.list_factors(s, owner)) == 1


def test_concurrent_finishes_of_one_ceremony_let_one_through(
    container: Container, owner: Owner
) -> None:
    key = SoftAuthenticator(RP_ID, ORIGIN)
    now = container.clock.now()
    with container.stores.session() as s:
        token, options = factors.registration_options(
            s,
            owner,
            user_name="ana",
            display_name="Ana",
            rp_id=RP_ID,
            rp_name="Tutela",
            now=now,
            ttl=TTL,
        )
        s.commit()
    answers = iter([key.create(options) for _ in range(4)])
    lock = threading.Lock()

    def finish() -> bool:
        with lock:
            credential = next(answers)
        with container.stores.session() as s:
            try:
                factors.finish_registration(
                    s,
                    owner,
                    token=token,
                    credential=credential,
                    rp_id=RP_ID,
                    origin=ORIGIN,
                    label="Key",
                    now=now,
                )
            except InvalidInput:
                return False
            s.commit()
        return True

    assert sorted(_race(finish)) == [False, False, False, True]
    with container.stores.session() as s:
        assert len(factors.list_factors(s, owner)) == 1


def test_registration_ceremony_expires(
    container: Container, clock: FakeClock, owner: Owner
) -> None:
    key = SoftAuthenticator(RP_ID, ORIGIN)
    with container.stores.session() as s:
        token, options = factors.registration_options(
            s,
            owner,
            user_name="ana",
            display_name="Ana",
            rp_id=RP_ID,
            rp_name="Tutela",
            now=clock.now(),
            ttl=TTL,
        )
        s.commit()
    credential = key.create(options)
    clock.advance(TTL + timedelta(seconds=1))
    with container.stores.session() as s:
        _refused(
            lambda: factors.finish_registration(
                s,
                owner,
                token=token,
                credential=credential,
                rp_id=RP_ID,
                origin=ORIGIN,
                label="Key",
                now=clock.now(),
            )
        )


def test_registration_ceremony_of_another_owner_is_refused(
    container: Container, owner: Owner, other: Owner
) -> None:
    key = SoftAuthenticator(RP_ID, ORIGIN)
    now = container.clock.now()
    with container.stores.session() as s:
        token, options = factors.registration_options(
            s,
            owner,
            user_name="ana",
            display_name="Ana",
            rp_id=RP_ID,
            rp_name="Tutela",
            now=now,
            ttl=TTL,
        )
        s.commit()
    credential = key.create(options)
    with container.stores.session() as s:
        _refused(
            lambda: factors.finish_registration(
                s,
                other,
                token=token,
                credential=credential,
                rp_id=RP_ID,
                origin=ORIGIN,
                label="Key",
                now=now,
            )
        )


def test_phishing_origin_is_refused(container: Container, owner: Owner) -> None:
    key = SoftAuthenticator(RP_ID, ORIGIN)
    now = container.clock.now()
    # Registration relayed through a look-alike site.
    with container.stores.session() as s:
        token, options = factors.registration_options(
            s,
            owner,
            user_name="ana",
            display_name="Ana",
            rp_id=RP_ID,
            rp_name="Tutela",
            now=now,
            ttl=TTL,
        )
        s.commit()
    phished = key.create(options, origin=PHISHING_ORIGIN)
    with container.stores.session() as s:
        _refused(
            lambda: factors.finish_registration(
                s,
                owner,
                token=token,
                credential=phished,
                rp_id=RP_ID,
                origin=ORIGIN,
                label="Key",
                now=now,
            )
        )
    # Sign-in relayed through a look-alike site, origin or RP ID wrong.
    _register(container, owner, key)
    _refused(lambda: _assert(container, owner, key, origin=PHISHING_ORIGIN))
    with container.stores.session() as s:
        challenge, options = factors.authentication_options(s, owner, rp_id=RP_ID)
    wrong_rp = key.get(options, rp_id="tutela-login.example.net")
    _refused(lambda: _verify(container, owner, challenge, wrong_rp))


def test_another_owners_credential_is_refused(
    container: Container, owner: Owner, other: Owner
) -> None:
    mine, theirs = SoftAuthenticator(RP_ID, ORIGIN), SoftAuthenticator(RP_ID, ORIGIN)
    _register(container, owner, mine)
    their_factor = _register(container, other, theirs)
    assert their_factor.credential_id is not None
    with container.stores.session() as s:
        challenge, options = factors.authentication_options(s, owner, rp_id=RP_ID)
    with pytest.raises(AuthenticatorRefused):
        theirs.get(options)  # not in allowCredentials: a browser would not offer it
    forced = theirs.get(options, credential_id=their_factor.credential_id)
    _refused(lambda: _verify(container, owner, challenge, forced))


def test_cloned_authenticator_is_refused(container: Container, owner: Owner) -> None:
    original = SoftAuthenticator(RP_ID, ORIGIN)
    _register(container, owner, original)
    clone = original.clone()
    assert _assert(container, owner, original).sign_count == 1
    _refused(lambda: _assert(container, owner, clone))  # the clone also says 1
    assert _assert(container, owner, original).sign_count == 2


def test_replayed_assertion_is_refused(container: Container, owner: Owner) -> None:
    key = SoftAuthenticator(RP_ID, ORIGIN)
    _register(container, owner, key)
    with container.stores.session() as s:
        challenge, options = factors.authentication_options(s, owner, rp_id=RP_ID)
    _verify(container, owner, challenge, key.get(options))
    _refused(lambda: _verify(container, owner, challenge, key.replay()))


def test_passkey_without_counter_is_accepted(container: Container, owner: Owner) -> None:
    passkey = SoftAuthenticator(RP_ID, ORIGIN, counter_step=0)
    _register(container, owner, passkey)
    assert _assert(container, owner, passkey).sign_count == 0
    assert _assert(container, owner, passkey).sign_count == 0


def test_sign_in_requires_user_verification(container: Container, owner: Owner) -> None:
    key = SoftAuthenticator(RP_ID, ORIGIN, user_verification=False)
    _register(container, owner, key)  # registration only prefers it
    _refused(lambda: _assert(container, owner, key))


def test_garbage_credentials_are_refused(container: Container, owner: Owner) -> None:
    key = SoftAuthenticator(RP_ID, ORIGIN)
    _register(container, owner, key)
    with container.stores.session() as s:
        challenge, options = factors.authentication_options(s, owner, rp_id=RP_ID)
    answer = key.get(options)
    tampered = json.loads(json.dumps(answer))
    tampered["response"]["signature"] = answer["response"]["signature"][:-4] + "AAAA"
    _refused(lambda: _verify(container, owner, challenge, tampered))
    _refused(lambda: _verify(container, owner, challenge, {"id": "x"}))
    _refused(lambda: _verify(container, owner, challenge, "not json"))  # type: ignore[arg-type]


def test_authentication_options_need_a_credential(container: Container, owner: Owner) -> None:
    with container.stores.session() as s, pytest.raises(InvalidInput) as err:
        factors.authentication_options(s, owner, rp_id=RP_ID)
    assert err.value.code == "webauthn_not_enrolled"


# --- recovery codes ------------------------------------------------------------------------


def test_recovery_codes_are_single_use(container: Container, owner: Owner, other: Owner) -> None:
    keys, now = container.vault.keys, container.clock.now()
    with container.stores.session() as s:
        codes = factors.new_recovery_codes(s, keys, owner, now=now)
        s.commit()
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(re.fullmatch(r"[2-9a-hjkmnp-z]{5}-[2-9a-hjkmnp-z]{5}", c) for c in codes)

    with container.stores.session() as s:
        assert factors.recovery_codes_left(s, owner) == 10
        typed = f"  {codes[0].upper().replace('-', ' ')} "  # read off paper, differently
        assert factors.use_recovery_code(s, keys, owner, typed, now=now)
        s.commit()
    with container.stores.session() as s:
        assert factors.recovery_codes_left(s, owner) == 9
        assert not factors.use_recovery_code(s, keys, owner, codes[0], now=now)  # burnt
        assert not factors.use_recovery_code(s, keys, other, codes[1], now=now)  # not theirs
        assert not factors.use_recovery_code(s, keys, owner, "22222-22222", now=now)
        assert not factors.use_recovery_code(s, keys, owner, "not a code", now=now)
        assert factors.recovery_codes_left(s, owner) == 9


def test_concurrent_uses_of_one_recovery_code_let_one_through(
    container: Container, owner: Owner
) -> None:
    keys, now = container.vault.keys, container.clock.now()
    with container.stores.session() as s:
        code = factors.new_recovery_codes(s, keys, owner, now=now)[0]
        s.commit()

    def use() -> bool:
        with container.stores.session() as s:
            used = factors.use_recovery_code(s, keys, owner, code, now=now)
            s.commit()
        return used

    assert sorted(_race(use)) == [False, False, False, True]


def test_new_recovery_codes_replace_the_old(container: Container, owner: Owner) -> None:
    keys, now = container.vault.keys, container.clock.now()
    with container.stores.session() as s:
        old = factors.new_recovery_codes(s, keys, owner, now=now)
        s.commit()
    with container.stores.session() as s:
        new = factors.new_recovery_codes(s, keys, owner, now=now)
        s.commit()
    with container.stores.session() as s:
        assert factors.recovery_codes_left(s, owner) == 10
        assert not any(factors.use_recovery_code(s, keys, owner, c, now=now) for c in old)
        assert factors.use_recovery_code(s, keys, owner, new[0], now=now)


def test_recovery_codes_are_stored_as_keyed_hashes(container: Container, owner: Owner) -> None:
    keys, now = container.vault.keys, container.clock.now()
    with container.stores.session() as s:
        codes = factors.new_recovery_codes(s, keys, owner, now=now)
        s.commit()
    with container.stores.session() as s:
        hashes = s.execute(text("SELECT code_hash FROM recovery_codes")).scalars().all()
    stored = b"".join(bytes(h) for h in hashes)
    for code in codes:
        assert code.encode() not in stored
        assert code.replace("-", "").encode() not in stored


# --- factors as a whole --------------------------------------------------------------------


def test_remove_factor(container: Container, owner: Owner, other: Owner) -> None:
    totp_id, _ = _enrol_totp(container, owner)
    key_factor = _register(container, owner, SoftAuthenticator(RP_ID, ORIGIN))
    with container.stores.session() as s:
        assert [f.id for f in factors.list_factors(s, owner)] == [totp_id, key_factor.id]
        with pytest.raises(NotFound):
            factors.remove_factor(s, other, totp_id)
        removed = factors.remove_factor(s, owner, key_factor.id)
        s.commit()
    assert removed.id == key_factor.id
    with container.stores.session() as s:
        assert not factors.has_webauthn(s, owner)
        assert [f.id for f in factors.list_factors(s, owner)] == [totp_id]
        factors.remove_factor(s, owner, totp_id)
        s.commit()
    with container.stores.session() as s:
        assert not factors.has_second_factor(s, owner)
        assert s.scalar(select(Factor).where(owner.where(Factor))) is None


def test_staff_member_enrols_every_kind_of_factor(container: Container, clock: FakeClock) -> None:
    staff = _staff(container)
    _, app = _enrol_totp(container, staff)
    key = SoftAuthenticator(RP_ID, ORIGIN)
    _register(container, staff, key)
    clock.advance(timedelta(seconds=30))
    assert _sign_in_totp(container, staff, app.at(clock.now())) is not None
    assert _assert(container, staff, key).sign_count == 1
    keys, now = container.vault.keys, clock.now()
    with container.stores.session() as s:
        codes = factors.new_recovery_codes(s, keys, staff, now=now)
        assert factors.use_recovery_code(s, keys, staff, codes[3], now=now)
        s.commit()
    with container.stores.session() as s:
        assert factors.has_webauthn(s, staff)
        assert len(factors.list_factors(s, staff)) == 2
        assert factors.recovery_codes_left(s, staff) == 9
