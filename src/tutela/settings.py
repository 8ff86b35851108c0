"""One settings class, read from `TUTELA_*` environment variables. No global instance."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUTELA_", env_file=None, extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    home: Path = Field(default=Path("var"), description="Folder for the embedded store.")

    database_url: str | None = None
    keystore_url: str | None = None

    master_key: SecretStr | None = Field(
        default=None, description="Base64 of a 32-byte master key; else the key file is used."
    )
    master_key_file: Path | None = None
    epoch_key_file: Path | None = Field(
        default=None, description="Key epochs, sealed under the master key; default in home."
    )
    key_copies_window_hours: float = Field(
        default=24,
        gt=0,
        le=24 * 30,
        description="Every copy of a destroyed key is unreadable within this many hours; "
        "key epochs end every half of it (S6).",
    )

    blob_store: Literal["local", "s3"] = "local"
    blob_dir: Path | None = None
    s3_bucket: str = "tutela-blobs"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None

    db_pool_size: int = Field(default=20, ge=1, le=500)

    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses whose X-Forwarded-For is believed; everyone else's is ignored.",
    )

    host: str = Field(
        default="localhost",
        description="Addresses to serve, comma-separated; localhost: 127.0.0.1 and ::1.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names answered besides localhost, loopback and public_url's host.",
    )
    host_check: bool | None = Field(
        default=None,
        description="Refuse requests for other Host names (400); default: on in production.",
    )
    port: int = 8000
    api_workers: int = 1

    max_upload_bytes: int = 200 * MiB
    max_json_bytes: int = 2 * MiB
    max_location_points: int = 10_000
    max_future_skew_seconds: int = 300
    session_ttl_hours: int = 12
    api_token_ttl_hours: int = 24
    cookie_secure: bool = False
    page_size_max: int = 200

    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19_456
    argon2_parallelism: int = 1
    argon2_max_concurrent: int = Field(default=4, ge=1, le=64)
    # Admission to argon2id work (R6): slots per process, some kept for known devices and
    # second steps; in defended mode a global budget of hashes for unknown devices.
    argon2_slots: int | None = Field(
        default=None, ge=1, le=64, description="Default: argon2_max_concurrent."
    )
    argon2_reserved_slots: int | None = Field(
        default=None, ge=0, le=63, description="Default: 1, or 0 with a single slot."
    )
    argon2_slot_wait_seconds: float = Field(default=0.5, ge=0, le=30)
    defended_hashes_per_second: float = Field(default=10.0, gt=0, le=100_000)
    defended_hash_burst: int = Field(default=10, ge=1, le=100_000)

    # Sign-in defences (R4-R7, S1-S5). Throttle state is shared through Redis when set.
    redis_url: str | None = Field(default=None, description="redis://host:port/db for throttles.")
    public_url: str = Field(
        default="http://localhost:8000",
        description="Base of links in emails; WebAuthn origin. A host name, not an IP "
        "address: browsers refuse an address as WebAuthn's relying-party id.",
    )
    webauthn_rp_id: str | None = Field(default=None, description="Default: public_url's host.")
    webauthn_rp_name: str = "Tutela"
    # R5: every adult who can see camera media enrols a second factor first. The old
    # name, which spoke of owners alone, is still read.
    mfa_required_for_camera_viewers: bool = Field(
        default=True,
        validation_alias=AliasChoices(
            "mfa_required_for_camera_viewers",
            "tutela_mfa_required_for_camera_viewers",
            "tutela_mfa_required_for_camera_owners",
        ),
    )
    step_up_minutes: int = Field(default=10, ge=1, le=120)
    challenge_ttl_minutes: int = Field(default=5, ge=1, le=30)
    email_link_ttl_minutes: int = Field(default=15, ge=1, le=120)
    # Account recovery ("forgot password"): how long the emailed link works, at most one
    # email per account per window, and how long a reset waits when the account has a
    # second factor that is not presented (0: no waiting path, the factor is required).
    recovery_link_minutes: int = Field(default=30, ge=1, le=240)
    recovery_email_minutes: int = Field(default=5, ge=1, le=1440)
    recovery_delay_days: int = Field(default=7, ge=0, le=90)
    signin_source_free_failures: int = Field(default=5, ge=1)
    signin_prefix_free_failures: int = Field(default=20, ge=1)
    signin_max_delay_seconds: int = Field(default=900, ge=1)
    signin_account_step_up_after: int = Field(default=5, ge=1, le=100)
    signin_account_max_failures: int = Field(default=100, ge=1, le=100)
    signin_failure_memory_seconds: int = Field(default=86_400, ge=60)
    signin_account_memory_days: int = Field(default=90, ge=1, le=3650)
    stuffing_window_seconds: int = Field(default=60, ge=5)
    stuffing_min_failures: int = Field(default=20, ge=1)
    stuffing_failure_ratio: float = Field(default=0.6, gt=0, le=1)
    stuffing_accounts_per_source: int = Field(default=4, ge=2)
    stuffing_breached_hits: int = Field(default=10, ge=1)
    defended_mode_minutes: int = Field(default=30, ge=1)

    # Notices: SMTP when a host is set, else .eml files under `<home>/mail`.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = "Tutela <no-reply@tutela.invalid>"
    mail_dir: Path | None = None
    security_alert_email: str = "security@tutela.invalid"

    # Consent (C2-C7): the purposes asked for and the notice version that asks.
    consent_purposes_file: Path | None = Field(
        default=None, description="The consent purposes (TOML); default: the packaged one."
    )
    # Verifiable parental consent (C3, C5, C7): which providers check a card or an ID
    # (only the fakes ship; production refuses them when asked to verify), how many failed
    # attempts a child's profile takes a day, questions asked, asks mailed a day.
    payment_provider: Literal["fake"] = "fake"
    id_checker: Literal["fake"] = "fake"
    parental_consent_failures_per_day: int = Field(default=5, ge=1, le=50)
    parental_consent_questions: int = Field(default=3, ge=1, le=10)
    parental_consent_asks_per_day: int = Field(default=3, ge=1, le=20)

    # Erasure and retention (A1-A8, C1, C5, C6, C9, C10, S6-S8).
    retention_policy_file: Path | None = Field(
        default=None, description="The retention policy (TOML); default: the packaged one."
    )
    staff_access_policy_file: Path | None = Field(
        default=None,
        description="The staff-access policy (TOML) the public notice is generated from "
        "(R9); default: the packaged one.",
    )
    erasure_completion_days: int = Field(default=30, ge=1, le=90)
    erasure_confirm_business_days: int = Field(default=10, ge=1, le=30)
    erasure_warn_fraction: float = Field(default=0.8, gt=0, lt=1)
    erasure_lease_seconds: int = Field(default=120, ge=1, le=3600)
    erasure_batch_size: int = Field(default=1000, ge=1, le=100_000)
    erasure_pass_jobs: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Jobs a worker pass runs before it verifies them together (one raw scan).",
    )
    erasure_raw_scan: bool = Field(
        default=True, description="Scan the SQLite files for remnants before completing."
    )
    embedded_worker: bool = Field(
        default=True, description="Run erasure jobs in the API process too (embedded mode)."
    )
    # A new or re-queued request wakes workers at once; polling finds what no wake-up
    # announces (a job due later, a notification lost) and what is due by the clock.
    embedded_worker_poll_seconds: float = Field(
        default=2.0, gt=0, le=3600, description="Seconds between the embedded worker's passes."
    )
    worker_poll_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="Seconds between `tutela worker` passes."
    )
    # Exports: a copy of a profile's data to download (C6, C7).
    export_link_days: float = Field(
        default=7, gt=0, le=90, description="Days an export's download link works once ready."
    )
    export_lease_seconds: int = Field(default=300, ge=1, le=3600)
    export_pass_limit: int = Field(
        default=5, ge=1, le=1000, description="Exports a worker pass packages at most."
    )
    retention_sweep_minutes: int = Field(default=60, ge=1)
    retention_batch_size: int = Field(default=1000, ge=1, le=100_000)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production":
            if self.database_url is None or self.database_url.startswith("sqlite"):
                raise ValueError("production needs TUTELA_DATABASE_URL on PostgreSQL")
            if self.keystore_url is None or self.keystore_url == self.database_url:
                raise ValueError("production needs a TUTELA_KEYSTORE_URL apart from the database")
            if not self.cookie_secure:
                raise ValueError("production needs TUTELA_COOKIE_SECURE=true")
            if self.redis_url is None:
                # Several API processes must share their sign-in throttles (R6).
                raise ValueError("production needs TUTELA_REDIS_URL for shared sign-in throttles")
        return self

    @model_validator(mode="after")
    def _leave_new_devices_a_slot(self) -> Settings:
        if self.reserved_hash_slots >= self.hash_slots:
            raise ValueError("TUTELA_ARGON2_RESERVED_SLOTS must be below TUTELA_ARGON2_SLOTS")
        return self

    @property
    def hash_slots(self) -> int:
        """argon2 slots per process: `argon2_slots`, else `argon2_max_concurrent`."""
        return self.argon2_slots or self.argon2_max_concurrent

    @property
    def reserved_hash_slots(self) -> int:
        """Slots only known devices and second steps may use (one, if there are two or more)."""
        if self.argon2_reserved_slots is not None:
            return self.argon2_reserved_slots
        return 1 if self.hash_slots > 1 else 0

    @property
    def main_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'tutela.db').resolve()}"

    @property
    def keys_url(self) -> str:
        return self.keystore_url or f"sqlite:///{(self.home / 'keys.db').resolve()}"

    @property
    def key_file(self) -> Path:
        return self.master_key_file or self.home / "master.key"

    @property
    def epoch_file(self) -> Path:
        return self.epoch_key_file or self.key_file.with_name("epochs.key")

    @property
    def blob_path(self) -> Path:
        return self.blob_dir or self.home / "blobs"

    @property
    def mail_path(self) -> Path:
        return self.mail_dir or self.home / "mail"

    @property
    def rp_id(self) -> str:
        from urllib.parse import urlsplit  # noqa: PLC0415

        return self.webauthn_rp_id or urlsplit(self.public_url).hostname or "localhost"

    @property
    def checks_host(self) -> bool:
        return self.environment == "production" if self.host_check is None else self.host_check

    @property
    def origin(self) -> str:
        return self.public_url.rstrip("/")
