"""Builds Tutela's real components from settings: stores, key source, blob store, hasher."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from tutela.audit.models import AuditEvent
from tutela.audit.service import AuditTag, record
from tutela.consent.freshness import cache_for
from tutela.consent.ledger import ConsentLedger
from tutela.consent.purposes import load_purposes
from tutela.core.clock import Clock, SystemClock
from tutela.db.engine import Stores, open_stores
from tutela.erasure.engine import ErasureEngine, Report
from tutela.identity.admission import Admission, make_admission
from tutela.identity.breached import BreachChecker, SqlRangeStore
from tutela.identity.passwords import PasswordHasher
from tutela.identity.recovery import Recovery
from tutela.identity.signin import Gate
from tutela.identity.throttle import Throttle, make_throttle
from tutela.notices.mail import Mailer, mailer_from_settings
from tutela.notices.port import OutboxNotices
from tutela.settings import Settings
from tutela.vault.blobs import BlobStore, LocalBlobStore, S3BlobStore
from tutela.vault.keysource import FileKeySource, KeySource, StaticKeySource
from tutela.vault.keystore import KeyStore
from tutela.vault.service import Limits, Vault

if TYPE_CHECKING:
    from tutela.retention.policy import Policy
    from tutela.transparency.policy import StaffAccessPolicy
    from tutela.transparency.service import SqlAccessTransparency
    from tutela.vault.rotation import EpochRotation


@dataclass
class Container:
    """Everything a request, a command or a worker needs, made once per process."""

    settings: Settings
    stores: Stores
    vault: Vault
    hasher: PasswordHasher
    clock: Clock
    throttle: Throttle
    admission: Admission
    breaches: BreachChecker
    mailer: Mailer
    notices: OutboxNotices = field(init=False)
    gate: Gate = field(init=False)
    recovery: Recovery = field(init=False)
    erasure: ErasureEngine = field(init=False)
    consent: ConsentLedger = field(init=False)
    _policy: Policy | None = field(default=None, init=False, repr=False)
    _staff_access: StaffAccessPolicy | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.notices = OutboxNotices(self.stores, self.vault.keys, self.mailer, self.settings)
        self.erasure = ErasureEngine(
            self.stores, self.vault, self.settings, self.clock, notices=self.notices
        )
        self.gate = Gate(
            keys=self.vault.keys,
            hasher=self.hasher,
            throttle=self.throttle,
            breaches=self.breaches,
            settings=self.settings,
            admission=self.admission,
        )
        self.recovery = Recovery(gate=self.gate, open_session=self.stores.session)
        self.consent = ConsentLedger(
            self.stores.session,
            load_purposes(self.settings.consent_purposes_file),
            cache=cache_for(self.stores.main),
        )

    @property
    def challenge_ttl(self) -> timedelta:
        return timedelta(minutes=self.settings.challenge_ttl_minutes)

    def deliver_notices(self) -> int:
        """Send what the outbox holds (after a request, and in the worker). Never raises."""
        try:
            report = self.notices.deliver_due(now=self.clock.now())
        except Exception as exc:  # a request's answer must not fail for a mail server
            logging.getLogger("tutela.notices").warning(
                "notice delivery failed: %s", type(exc).__name__
            )
            return 0
        return report.sent

    @property
    def policy(self) -> Policy:
        """The retention policy file, loaded (and validated) once per process."""
        if self._policy is None:
            from tutela.retention.policy import load_policy  # noqa: PLC0415

            self._policy = load_policy(self.settings.retention_policy_file)
        return self._policy

    @property
    def staff_access(self) -> StaffAccessPolicy:
        """The staff-access policy file (R9), loaded (and validated) once per process."""
        if self._staff_access is None:
            from tutela.transparency.policy import load_staff_access  # noqa: PLC0415

            self._staff_access = load_staff_access(self.settings.staff_access_policy_file)
        return self._staff_access

    @property
    def transparency(self) -> SqlAccessTransparency:
        """The record of employees' looks at customers' media, as customers see it (R3)."""
        from tutela.transparency.service import SqlAccessTransparency  # noqa: PLC0415

        return SqlAccessTransparency(self.vault.keys, self.staff_access)

    def hold(self, household_id: uuid.UUID, profile_id: uuid.UUID | None, now: datetime) -> object:
        """The legal hold covering this scope now, if any. Without a profile (a whole
        household) any hold on the household or one of its profiles counts."""
        if profile_id is not None:
            return self.policy.hold_for(household_id, profile_id, now)
        return next(
            (h for h in self.policy.active_holds(now) if h.household_id == household_id), None
        )

    def erasure_pass(self) -> Report:
        """One pass of background erasure work: due jobs, downstream retries, deadlines.

        Never raises: a worker loop must outlive a store that is down for a moment.
        """
        try:
            self.erasure.retry_downstream()
            report = self.erasure.run_pending(limit=self.settings.erasure_pass_jobs)
            self.erasure.check_deadlines()
        except Exception as exc:
            logging.getLogger("tutela.erasure").warning(
                "erasure pass failed: %s", type(exc).__name__
            )
            return Report()
        return report

    def export_pass(self) -> int:
        """One pass of export work (C6): package queued exports, then erase the packages
        whose download link expired. Returns how many became ready. Never raises, like
        the other passes."""
        from tutela.exports.worker import expire_due, package_pending  # noqa: PLC0415

        log = logging.getLogger("tutela.exports")
        ready = 0
        try:
            ready = package_pending(self)
        except Exception as exc:
            log.warning("export packaging pass failed: %s", type(exc).__name__)
        try:
            expire_due(self)
        except Exception as exc:
            log.warning("export expiry pass failed: %s", type(exc).__name__)
        return ready

    def rotate_key_epoch(self, *, force: bool = False) -> EpochRotation | None:
        """Rotate the key epoch when it is due (every half window, or now with `force`);
        then, whatever the rotation did (it may have failed), settle the erasures whose key
        copies a destroyed epoch covered and record (once) any epoch whose erasures'
        promised time has passed (S6, A8)."""
        from tutela.households.service import reindex_emails  # noqa: PLC0415
        from tutela.vault.rotation import rotate_epoch  # noqa: PLC0415

        keys = self.vault.keys

        def reindex(_: object) -> int:
            return reindex_emails(self.stores.session, keys, now=self.clock.now())

        try:
            rotation = rotate_epoch(keys, clock=self.clock, force=force, before_destroy=reindex)
            reindex(None)  # an account made in the instant a rotation began
            if rotation is not None:
                destroyed = ",".join(str(e.seq) for e in rotation.destroyed) or "-"
                with self.stores.session() as session:
                    record(
                        session,
                        tag=AuditTag.KEY_EPOCH_ROTATED,
                        actor="system",
                        now=self.clock.now(),
                        subject=f"key-epoch:{rotation.current.seq}:destroyed:{destroyed}",
                    )
                    session.commit()
        finally:
            self._settle_key_epochs()
        return rotation

    def _settle_key_epochs(self) -> None:
        from tutela.erasure import copies  # noqa: PLC0415

        log = logging.getLogger("tutela.vault")
        now = self.clock.now()
        try:
            copies.settle(self.stores, self.vault.keys, now=now)
            for seq in copies.overdue(self.stores, now=now):
                subject = f"key-epoch:{seq}:overdue"
                with self.stores.session() as session:
                    if session.scalar(select(AuditEvent.id).where(AuditEvent.subject == subject)):
                        continue
                    record(
                        session,
                        tag=AuditTag.KEY_EPOCH_OVERDUE,
                        actor="system",
                        now=now,
                        subject=subject,
                    )
                    session.commit()
                log.error("key epoch %d is past the time erasure receipts promised", seq)
        except Exception as exc:
            log.error("settling key epochs failed: %s", type(exc).__name__)

    def key_epoch_pass(self) -> EpochRotation | None:
        """`rotate_key_epoch` for a worker loop: never raises, so the loop outlives a store
        that is down for a moment; a failed rotation is logged as an error (its promises
        to customers are at stake) and tried again at the next pass."""
        try:
            return self.rotate_key_epoch()
        except Exception as exc:
            logging.getLogger("tutela.vault").error(
                "key epoch rotation failed: %s", type(exc).__name__
            )
            return None

    def recovery_pass(self) -> int:
        """Apply the delayed account recoveries whose wait is over, then send their
        notices. Never raises, like the other passes."""
        try:
            done = self.recovery.complete_due(now=self.clock.now())
        except Exception as exc:
            logging.getLogger("tutela.identity").warning(
                "recovery pass failed: %s", type(exc).__name__
            )
            return 0
        if done:
            self.deliver_notices()
        return done

    def retention_pass(self) -> int:
        """The scheduled retention sweep, when it is due; returns erasures it requested."""
        from tutela.retention.sweep import scheduled_sweep  # noqa: PLC0415

        try:
            return scheduled_sweep(self)
        except Exception as exc:
            logging.getLogger("tutela.retention").warning(
                "retention sweep failed: %s", type(exc).__name__
            )
            return 0

    @property
    def limits(self) -> Limits:
        return Limits(
            max_upload_bytes=self.settings.max_upload_bytes,
            max_future_skew=timedelta(seconds=self.settings.max_future_skew_seconds),
            max_location_points=self.settings.max_location_points,
        )

    def close(self) -> None:
        self.erasure.wakeup.close()
        if self.consent.cache is not None:
            self.consent.cache.close()
        self.stores.dispose()


def key_source(settings: Settings) -> KeySource:
    if settings.master_key is not None:
        return StaticKeySource(settings.master_key.get_secret_value(), settings.epoch_file)
    return FileKeySource(settings.key_file, settings.epoch_file)


def blob_store(settings: Settings) -> BlobStore:
    if settings.blob_store == "s3":
        return S3BlobStore.connect(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=(
                settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None
            ),
            secret_access_key=(
                settings.s3_secret_access_key.get_secret_value()
                if settings.s3_secret_access_key
                else None
            ),
            create_bucket=settings.environment != "production",
        )
    return LocalBlobStore(settings.blob_path)


def build(
    settings: Settings, *, clock: Clock | None = None, mailer: Mailer | None = None
) -> Container:
    stores = open_stores(settings.main_url, settings.keys_url, pool_size=settings.db_pool_size)
    keys = KeyStore(
        stores.key_sessions,
        key_source(settings),
        window=timedelta(hours=settings.key_copies_window_hours),
    )
    return Container(
        settings=settings,
        stores=stores,
        vault=Vault(keys=keys, blobs=blob_store(settings)),
        hasher=PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            # Admission's slots bound sign-in hashing; this bounds every other caller too.
            max_concurrent=max(settings.argon2_max_concurrent, settings.hash_slots),
        ),
        clock=clock or SystemClock(),
        throttle=make_throttle(settings),
        admission=make_admission(settings),
        breaches=BreachChecker(SqlRangeStore(stores.main_sessions)),
        mailer=mailer or mailer_from_settings(settings),
    )
