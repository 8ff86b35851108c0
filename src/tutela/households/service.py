"""Use cases of the households part: homes, people, guardians and devices."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import Conflict, Forbidden, InvalidDeviceToken, KeyUnavailable, NotFound
from tutela.core.ids import uuid7
from tutela.db.engine import keyset_after
from tutela.households import rules
from tutela.households.models import (
    Account,
    AccountRole,
    Device,
    DeviceKind,
    EmailIndexEpoch,
    Guardianship,
    Household,
    Profile,
    ProfileKind,
    ProfileState,
)
from tutela.vault import crypto
from tutela.vault.keystore import EMAIL_INDEX_KEY, KeyStore

DEVICE_TOKEN_PREFIX = "tdv_"  # noqa: S105 (a public prefix, not a secret)


@dataclass(frozen=True)
class AdultSpec:
    name: str
    email: str
    password_hash: str
    role: AccountRole = AccountRole.MEMBER


@dataclass(frozen=True)
class ChildSpec:
    name: str
    birth_date: date
    guardian_emails: tuple[str, ...]


@dataclass(frozen=True)
class DeviceSpec:
    kind: str
    label: str
    zone: str | None = None


@dataclass(frozen=True)
class HomeSpec:
    adults: tuple[AdultSpec, ...]
    children: tuple[ChildSpec, ...] = ()
    devices: tuple[DeviceSpec, ...] = ()


@dataclass
class CreatedHome:
    household_id: uuid.UUID
    accounts: dict[str, uuid.UUID] = field(default_factory=dict)  # email -> account id
    adult_profiles: dict[str, uuid.UUID] = field(default_factory=dict)  # email -> profile id
    child_profiles: list[uuid.UUID] = field(default_factory=list)
    device_tokens: dict[uuid.UUID, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfileView:
    id: uuid.UUID
    kind: str
    name: str
    birth_date: date | None
    created_at: datetime
    last_active_at: datetime


def _name_aad(household_id: uuid.UUID, profile_id: uuid.UUID) -> bytes:
    return b"tutela:profile-name:" + household_id.bytes + profile_id.bytes


def _birth_aad(household_id: uuid.UUID, profile_id: uuid.UUID) -> bytes:
    return b"tutela:profile-birth-date:" + household_id.bytes + profile_id.bytes


def _email_aad(household_id: uuid.UUID, account_id: uuid.UUID) -> bytes:
    return b"tutela:account-email:" + household_id.bytes + account_id.bytes


EMAIL_INDEX_PURPOSE = "tutela:email-index"


def email_index(keys: KeyStore, email: str, *, epoch_id: str) -> bytes:
    """Keyed index of an email (HMAC-SHA-256) under a key epoch: lookups work, the table
    reveals no address, and once the epoch is destroyed an index left in a backup or a
    dead tuple answers no guess (S6)."""
    key = keys.epoch_subkey(epoch_id, EMAIL_INDEX_PURPOSE)
    return crypto.keyed_digest(key, rules.normalise_email(email).encode())


def _index_epoch(session: Session, keys: KeyStore, *, now: datetime) -> tuple[int, str]:
    """The epoch a new email index is keyed under, held until this transaction ends (FOR
    SHARE on PostgreSQL; on SQLite a first write takes the write lock), so no rotation can
    move past it before the account is committed and visible to its re-index."""
    where = EmailIndexEpoch.id == 1
    for _ in range(2):
        if session.get_bind().dialect.name == "postgresql":
            row = session.execute(
                select(EmailIndexEpoch.seq, EmailIndexEpoch.epoch_id)
                .where(where)
                .with_for_update(read=True)
            ).one_or_none()
        else:
            session.execute(
                update(EmailIndexEpoch)
                .where(where)
                .values(seq=EmailIndexEpoch.seq)
                .execution_options(synchronize_session=False)
            )
            row = session.execute(
                select(EmailIndexEpoch.seq, EmailIndexEpoch.epoch_id).where(where)
            ).one_or_none()
        if row is not None:
            return int(row.seq), str(row.epoch_id)
        _first_index_epoch(session, keys, now=now)
    raise AssertionError("the email index epoch could not be recorded")


def _first_index_epoch(session: Session, keys: KeyStore, *, now: datetime) -> None:
    """Record the first epoch, in the caller's transaction (another writer may race it)."""
    epoch = keys.current_epoch(now=now)
    postgresql = session.get_bind().dialect.name == "postgresql"
    insert = pg_insert if postgresql else sqlite_insert
    session.execute(
        insert(EmailIndexEpoch)
        .values(id=1, seq=epoch.seq, epoch_id=epoch.id)
        .on_conflict_do_nothing()
    )


def email_indexes(keys: KeyStore, email: str, *, now: datetime) -> list[bytes]:
    """Every index an account of `email` may have now: under the current epoch, under one
    still retiring (a rotation in progress), or under the service key (accounts made before
    key epochs, until the next rotation moves them)."""
    normalised = rules.normalise_email(email).encode()
    found = []
    # The epochs the key source still holds (current and retiring): no database query.
    for epoch_id in keys.source.epoch_ids():
        try:
            key = keys.epoch_subkey(epoch_id, EMAIL_INDEX_PURPOSE)
        except KeyUnavailable:
            continue  # destroyed a moment ago by another process
        found.append(crypto.keyed_digest(key, normalised))
    found.append(email_throttle_key(keys, email, now=now))
    return found


def email_throttle_key(keys: KeyStore, email: str, *, now: datetime) -> bytes:
    """A keyed hash of an email that never changes (the sign-in throttle's account key:
    a count of failures must outlive epochs). Kept in memory and Redis only."""
    key = keys.service_key(EMAIL_INDEX_KEY, now=now)
    return crypto.keyed_digest(key, rules.normalise_email(email).encode())


def reindex_emails(
    session_factory: Callable[[], Session], keys: KeyStore, *, now: datetime, batch: int = 500
) -> int:
    """Move every account's email index to the current key epoch; returns how many moved.

    Run by each epoch rotation before the old epoch is destroyed, and by every worker pass
    (an account made in the instant a rotation began is moved by the next; the query is
    one index lookup when nothing is left). Each row is written only if nobody changed it
    since it was read. Accounts whose keys are gone (a household being closed) are left:
    their rows go with the erasure. An index that would collide with another account's is
    left too and recorded, never allowed to stop a rotation.
    """
    epoch = keys.current_epoch(now=now)
    _advance_index_epoch(session_factory, keys, seq=epoch.seq, epoch_id=epoch.id, now=now)
    key = keys.epoch_subkey(epoch.id, EMAIL_INDEX_PURPOSE)
    moved = 0
    stale = or_(Account.email_index_epoch.is_(None), Account.email_index_epoch < epoch.seq)
    after: tuple[uuid.UUID, uuid.UUID] | None = None
    while True:
        query = select(Account).where(stale).order_by(Account.household_id, Account.id)
        if after is not None:
            query = query.where(keyset_after(Account.household_id, Account.id, after))
        with session_factory() as session:
            rows = session.scalars(query.limit(batch)).all()
        if not rows:
            return moved
        after = (rows[-1].household_id, rows[-1].id)
        moves = []
        for account in rows:
            try:
                email = account_email(keys, account)
            except KeyUnavailable:
                continue  # erased a moment ago: the erasure deletes the row
            moves.append((account, crypto.keyed_digest(key, rules.normalise_email(email).encode())))
        try:
            moved += _move_indexes(session_factory, moves, epoch.seq)
        except IntegrityError:
            # Two accounts of one address (which sign-up refuses): move the others one by one
            # and record the one that collides, rather than stop the rotation.
            for one in moves:
                try:
                    moved += _move_indexes(session_factory, [one], epoch.seq)
                except IntegrityError:
                    with session_factory() as session:
                        record(
                            session,
                            tag=AuditTag.EMAIL_INDEX_CONFLICT,
                            actor="system",
                            now=now,
                            household_id=one[0].household_id,
                            subject=f"account:{one[0].id}",
                        )
                        session.commit()


def _advance_index_epoch(
    session_factory: Callable[[], Session],
    keys: KeyStore,
    *,
    seq: int,
    epoch_id: str,
    now: datetime,
) -> None:
    """New indexes go under `epoch_id` from this commit. The write waits for every sign-up
    still holding the older epoch, so once it commits the re-index sees all of them."""
    with session_factory() as session:
        moved = session.execute(
            update(EmailIndexEpoch)
            .where(EmailIndexEpoch.id == 1, EmailIndexEpoch.seq < seq)
            .values(seq=seq, epoch_id=epoch_id)
            .execution_options(synchronize_session=False)
        )
        if getattr(moved, "rowcount", 0) == 0 and session.get(EmailIndexEpoch, 1) is None:
            _first_index_epoch(session, keys, now=now)
        session.commit()


def _move_indexes(
    session_factory: Callable[[], Session], moves: list[tuple[Account, bytes]], seq: int
) -> int:
    """Write new email indexes in one transaction, each only if the row is unchanged."""
    with session_factory() as session:
        for account, index in moves:
            session.execute(
                update(Account)
                .where(
                    Account.household_id == account.household_id,
                    Account.id == account.id,
                    Account.email_index == account.email_index,
                )
                .values(email_index=index, email_index_epoch=seq)
                .execution_options(synchronize_session=False)
            )
        session.commit()
    return len(moves)


def hash_device_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _new_profile(
    session: Session,
    keys: KeyStore,
    *,
    household_id: uuid.UUID,
    kind: ProfileKind,
    name: str,
    birth_date: date | None,
    now: datetime,
) -> tuple[Profile, bytes]:
    """A new profile and its fresh key (committed to the key store at once)."""
    profile_id = uuid7()
    key = keys.create_profile_key(household_id=household_id, profile_id=profile_id, now=now)
    profile = Profile(
        household_id=household_id,
        id=profile_id,
        kind=kind,
        name_sealed=crypto.seal(key, name.encode(), aad=_name_aad(household_id, profile_id)),
        birth_date_sealed=(
            crypto.seal(
                key, birth_date.isoformat().encode(), aad=_birth_aad(household_id, profile_id)
            )
            if birth_date
            else None
        ),
        created_at=now,
        last_active_at=now,
    )
    session.add(profile)
    record(
        session,
        tag=AuditTag.PROFILE_CREATED,
        actor="system",
        now=now,
        household_id=household_id,
        subject=f"profile:{profile_id}",
    )
    return profile, key


def _new_device(
    session: Session,
    *,
    household_id: uuid.UUID,
    spec: DeviceSpec,
    now: datetime,
    actor: str = "system",
) -> tuple[Device, str]:
    kind, zone = rules.check_device(spec.kind, spec.zone)
    device_id = uuid7()
    token = f"{DEVICE_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
    device = Device(
        household_id=household_id,
        id=device_id,
        kind=kind,
        zone=zone,
        label=rules.check_device_label(spec.label),
        token_hash=hash_device_token(token),
        created_at=now,
    )
    session.add(device)
    record(
        session,
        tag=AuditTag.DEVICE_REGISTERED,
        actor=actor,
        now=now,
        household_id=household_id,
        subject=f"device:{device_id}",
    )
    return device, token


def _lock_emails(session: Session, keys: KeyStore, emails: list[str], *, now: datetime) -> None:
    """On PostgreSQL, hold a transaction lock per address until this home commits, so two
    sign-ups of one address are checked one after the other (READ COMMITTED would let both
    pass, with different indexes if an epoch began between them). Lock keys are a stable
    keyed hash of the address, held only in the server's memory. SQLite runs one writer at
    a time already."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for email in sorted(set(emails)):
        lock = int.from_bytes(email_throttle_key(keys, email, now=now)[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": lock})


def _check_home(
    session: Session, keys: KeyStore, *, spec: HomeSpec, now: datetime
) -> dict[str, tuple[bytes, int]]:
    """Refuse a bad home before anything is written; return each adult's email index."""
    if not spec.adults:
        raise Conflict("A household needs at least one adult.", code="household_needs_adult")
    indexes: dict[str, tuple[bytes, int]] = {}
    emails = [rules.check_email(adult.email) for adult in spec.adults]
    _lock_emails(session, keys, emails, now=now)
    seq, epoch_id = _index_epoch(session, keys, now=now)
    for email in emails:
        index = (email_index(keys, email, epoch_id=epoch_id), seq)
        taken = session.scalar(
            select(Account.id).where(Account.email_index.in_(email_indexes(keys, email, now=now)))
        )
        if email in indexes or taken is not None:
            raise Conflict("That email already has an account.", code="email_taken")
        indexes[email] = index
    for child in spec.children:
        rules.check_child_birth_date(child.birth_date, now.date())
        guardians = [rules.normalise_email(e) for e in child.guardian_emails]
        if not guardians or any(e not in indexes for e in guardians):
            raise Conflict(
                "A child's guardian must be an adult of the household.", code="unknown_guardian"
            )
    for device in spec.devices:
        rules.check_device(device.kind, device.zone)
        rules.check_device_label(device.label)
    return indexes


def create_home(
    session: Session, keys: KeyStore, *, spec: HomeSpec, now: datetime, commit: bool = True
) -> CreatedHome:
    """A household with its adults (accounts), children (with guardians) and devices.

    Everything is checked before anything is written. Profile keys go to the key store
    first; if the household then fails to commit, they are destroyed again. Device
    tokens are returned once and stored only hashed. `commit=False` lets a bulk loader
    commit several homes at once.
    """
    # identity owns passwords; imported here because identity also reads accounts.
    from tutela.identity.service import add_password  # noqa: PLC0415

    indexes = _check_home(session, keys, spec=spec, now=now)
    household = Household(id=uuid7(), created_at=now, state="active")
    created = CreatedHome(household_id=household.id)
    try:
        session.add(household)
        for adult in spec.adults:
            email = rules.normalise_email(adult.email)
            profile, profile_key = _new_profile(
                session,
                keys,
                household_id=household.id,
                kind=ProfileKind.ADULT,
                name=adult.name,
                birth_date=None,
                now=now,
            )
            created.adult_profiles[email] = profile.id
            session.flush()  # no ORM relationships: rows go in the order they depend on
            account_id = uuid7()
            session.add(
                Account(
                    household_id=household.id,
                    id=account_id,
                    profile_id=profile.id,
                    email_index=indexes[email][0],
                    email_index_epoch=indexes[email][1],
                    email_sealed=crypto.seal(
                        profile_key, email.encode(), aad=_email_aad(household.id, account_id)
                    ),
                    role=adult.role,
                    created_at=now,
                )
            )
            session.flush()
            add_password(
                session,
                household_id=household.id,
                account_id=account_id,
                password_hash=adult.password_hash,
                now=now,
            )
            record(
                session,
                tag=AuditTag.ACCOUNT_CREATED,
                actor="system",
                now=now,
                household_id=household.id,
                subject=f"account:{account_id}",
            )
            created.accounts[email] = account_id
        for child in spec.children:
            profile, _ = _new_profile(
                session,
                keys,
                household_id=household.id,
                kind=ProfileKind.CHILD,
                name=child.name,
                birth_date=child.birth_date,
                now=now,
            )
            created.child_profiles.append(profile.id)
            session.flush()
            for email in {rules.normalise_email(e) for e in child.guardian_emails}:
                session.add(
                    Guardianship(
                        household_id=household.id,
                        child_profile_id=profile.id,
                        guardian_account_id=created.accounts[email],
                        created_at=now,
                    )
                )
        for device_spec in spec.devices:
            device, token = _new_device(
                session, household_id=household.id, spec=device_spec, now=now
            )
            created.device_tokens[device.id] = token
        if commit:
            session.commit()
    except BaseException:
        session.rollback()
        for profile_id in [*created.adult_profiles.values(), *created.child_profiles]:
            keys.destroy_profile_key(household_id=household.id, profile_id=profile_id)
        raise
    return created


def _check_owner(role: str) -> None:
    if role != AccountRole.OWNER:
        raise Forbidden("Only the household's owner manages its devices.", code="owner_only")


def register_device(
    session: Session,
    *,
    household_id: uuid.UUID,
    spec: DeviceSpec,
    now: datetime,
    actor: str = "system",
    actor_role: str = AccountRole.OWNER,
    camera_needs_factor: bool = False,
) -> tuple[Device, str]:
    """Add a device; its token is returned this once and kept only as a hash.

    With `camera_needs_factor` (R5), a camera demotes the open sessions of every account
    of the household that has no second factor: they may only enrol one from now on.
    """
    _check_owner(actor_role)
    if session.get(Household, household_id) is None:
        raise NotFound("No such household.", code="household_not_found")
    device, token = _new_device(session, household_id=household_id, spec=spec, now=now, actor=actor)
    if camera_needs_factor and device.kind == DeviceKind.CAMERA:
        # Imported here: identity reads households, not the other way round, except for
        # this one rule about who may keep a session once a camera films the home.
        from tutela.identity.camera import demote_without_factor  # noqa: PLC0415

        demote_without_factor(session, household_id=household_id, now=now)
    session.commit()
    return device, token


def revoke_device(
    session: Session,
    *,
    household_id: uuid.UUID,
    device_id: uuid.UUID,
    now: datetime,
    actor: str = "system",
    actor_role: str = AccountRole.OWNER,
) -> Device:
    """Revoke a device's token for good (a lost or sold device); idempotent."""
    _check_owner(actor_role)
    device = session.get(Device, (household_id, device_id))
    if device is None:
        raise NotFound("No such device.", code="device_not_found")
    if device.revoked_at is None:
        device.revoked_at = now
        record(
            session,
            tag=AuditTag.DEVICE_REVOKED,
            actor=actor,
            now=now,
            household_id=household_id,
            subject=f"device:{device_id}",
        )
        session.commit()
    return device


def authenticate_device(session: Session, *, token: str, now: datetime) -> Device:
    """The device a token belongs to; a bad, unknown or revoked token is refused alike."""
    if not token.startswith(DEVICE_TOKEN_PREFIX) or len(token) > 200:
        raise InvalidDeviceToken("The device token is not valid.")
    digest = hash_device_token(token)
    device = session.scalar(select(Device).where(Device.token_hash == digest))
    if (
        device is None
        or not hmac.compare_digest(device.token_hash, digest)
        or device.revoked_at is not None
    ):
        raise InvalidDeviceToken("The device token is not valid.")
    return device


def find_account(session: Session, keys: KeyStore, *, email: str, now: datetime) -> Account | None:
    return session.scalar(
        select(Account).where(Account.email_index.in_(email_indexes(keys, email, now=now)))
    )


def account_email(keys: KeyStore, account: Account) -> str:
    key = keys.profile_key(household_id=account.household_id, profile_id=account.profile_id)
    return crypto.open_sealed(
        key, account.email_sealed, aad=_email_aad(account.household_id, account.id)
    ).decode()


def visible_profile_ids(
    session: Session, *, household_id: uuid.UUID, account_id: uuid.UUID, own_profile_id: uuid.UUID
) -> set[uuid.UUID]:
    # A profile under erasure is read by nobody from the moment its erasure begins.
    guarded = set(
        session.scalars(
            select(Guardianship.child_profile_id)
            .join(
                Profile,
                (Profile.household_id == Guardianship.household_id)
                & (Profile.id == Guardianship.child_profile_id),
            )
            .where(
                Guardianship.household_id == household_id,
                Guardianship.guardian_account_id == account_id,
                Profile.state == ProfileState.ACTIVE,
            )
        )
    )
    return rules.visible_profiles(own_profile_id=own_profile_id, guarded_profile_ids=guarded)


def profile_view(keys: KeyStore, profile: Profile) -> ProfileView:
    key = keys.profile_key(household_id=profile.household_id, profile_id=profile.id)
    name = crypto.open_sealed(
        key, profile.name_sealed, aad=_name_aad(profile.household_id, profile.id)
    )
    birth = (
        date.fromisoformat(
            crypto.open_sealed(
                key, profile.birth_date_sealed, aad=_birth_aad(profile.household_id, profile.id)
            ).decode()
        )
        if profile.birth_date_sealed
        else None
    )
    return ProfileView(
        id=profile.id,
        kind=profile.kind,
        name=name.decode(),
        birth_date=birth,
        created_at=profile.created_at,
        last_active_at=profile.last_active_at,
    )


def list_profiles(
    session: Session, keys: KeyStore, *, household_id: uuid.UUID, profile_ids: set[uuid.UUID]
) -> list[ProfileView]:
    rows = session.scalars(
        select(Profile)
        .where(Profile.household_id == household_id, Profile.id.in_(profile_ids))
        .order_by(Profile.kind, Profile.created_at)
    ).all()
    return [profile_view(keys, p) for p in rows]


def list_devices(session: Session, *, household_id: uuid.UUID) -> list[Device]:
    return list(
        session.scalars(
            select(Device).where(Device.household_id == household_id).order_by(Device.created_at)
        )
    )


def guardians_of(
    session: Session, *, household_id: uuid.UUID, child_profile_id: uuid.UUID
) -> list[Account]:
    """The accounts that are guardians of a child profile, oldest first (C6)."""
    return list(
        session.scalars(
            select(Account)
            .join(
                Guardianship,
                (Guardianship.household_id == Account.household_id)
                & (Guardianship.guardian_account_id == Account.id),
            )
            .where(
                Guardianship.household_id == household_id,
                Guardianship.child_profile_id == child_profile_id,
            )
            .order_by(Account.id)
        )
    )


def active_profiles(session: Session, *, household_id: uuid.UUID) -> list[Profile]:
    """The household's profiles that are not being erased: those its devices record for."""
    return list(
        session.scalars(
            select(Profile)
            .where(Profile.household_id == household_id, Profile.state == ProfileState.ACTIVE)
            .order_by(Profile.kind, Profile.created_at, Profile.id)
        )
    )
