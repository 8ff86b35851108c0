"""households vault identity audit

Revision ID: f8eb225ac712
Revises:
Create Date: 2026-11-29 04:09:30.584912
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f8eb225ac712"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("household_id", sa.Uuid(), nullable=True),
        sa.Column("subject", sa.String(length=80), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_household_at", ["household_id", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_tag"), ["tag"], unique=False)

    op.create_table(
        "households",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_households")),
    )
    op.create_table(
        "devices",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("zone", sa.String(length=16), nullable=True),
        sa.Column("label", sa.String(length=80), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["household_id"], ["households.id"], name=op.f("fk_devices_household_id_households")
        ),
        sa.PrimaryKeyConstraint("household_id", "id", name=op.f("pk_devices")),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index("ix_devices_token_hash", ["token_hash"], unique=True)

    op.create_table(
        "profiles",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("name_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("birth_date_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_active_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["household_id"], ["households.id"], name=op.f("fk_profiles_household_id_households")
        ),
        sa.PrimaryKeyConstraint("household_id", "id", name=op.f("pk_profiles")),
    )
    op.create_table(
        "accounts",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("email_index", sa.LargeBinary(), nullable=False),
        sa.Column("email_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["household_id", "profile_id"],
            ["profiles.household_id", "profiles.id"],
            name=op.f("fk_accounts_household_id_profile_id_profiles"),
        ),
        sa.ForeignKeyConstraint(
            ["household_id"], ["households.id"], name=op.f("fk_accounts_household_id_households")
        ),
        sa.PrimaryKeyConstraint("household_id", "id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("email_index", name=op.f("uq_accounts_email_index")),
    )
    op.create_table(
        "items",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column("source_item_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("media_type", sa.String(length=64), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_mac", sa.LargeBinary(), nullable=False),
        sa.Column("blob_key", sa.String(length=200), nullable=True),
        sa.Column("sealed_size", sa.BigInteger(), nullable=False),
        sa.Column("sealed_fields", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["household_id", "device_id"],
            ["devices.household_id", "devices.id"],
            name=op.f("fk_items_household_id_device_id_devices"),
        ),
        sa.ForeignKeyConstraint(
            ["household_id", "profile_id"],
            ["profiles.household_id", "profiles.id"],
            name=op.f("fk_items_household_id_profile_id_profiles"),
        ),
        sa.ForeignKeyConstraint(
            ["household_id", "source_item_id"],
            ["items.household_id", "items.id"],
            name=op.f("fk_items_household_id_source_item_id_items"),
        ),
        sa.PrimaryKeyConstraint("household_id", "id", name=op.f("pk_items")),
    )
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_items_household_captured", ["household_id", "captured_at"], unique=False
        )
        batch_op.create_index(
            "ix_items_household_profile_captured",
            ["household_id", "profile_id", "captured_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_items_household_source", ["household_id", "source_item_id"], unique=False
        )

    op.create_table(
        "guardianships",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("child_profile_id", sa.Uuid(), nullable=False),
        sa.Column("guardian_account_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["household_id", "child_profile_id"],
            ["profiles.household_id", "profiles.id"],
            name=op.f("fk_guardianships_household_id_child_profile_id_profiles"),
        ),
        sa.ForeignKeyConstraint(
            ["household_id", "guardian_account_id"],
            ["accounts.household_id", "accounts.id"],
            name=op.f("fk_guardianships_household_id_guardian_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint(
            "household_id", "child_profile_id", "guardian_account_id", name=op.f("pk_guardianships")
        ),
    )
    op.create_table(
        "passwords",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("hash", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["household_id", "account_id"],
            ["accounts.household_id", "accounts.id"],
            name=op.f("fk_passwords_household_id_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("household_id", "account_id", name=op.f("pk_passwords")),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("client_sealed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["household_id", "account_id"],
            ["accounts.household_id", "accounts.id"],
            name=op.f("fk_sessions_household_id_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sessions_household_account", ["household_id", "account_id"], unique=False
        )
        batch_op.create_index("ix_sessions_token_hash", ["token_hash"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_token_hash")
        batch_op.drop_index("ix_sessions_household_account")

    op.drop_table("sessions")
    op.drop_table("passwords")
    op.drop_table("guardianships")
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index("ix_items_household_source")
        batch_op.drop_index("ix_items_household_profile_captured")
        batch_op.drop_index("ix_items_household_captured")

    op.drop_table("items")
    op.drop_table("accounts")
    op.drop_table("profiles")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_token_hash")

    op.drop_table("devices")
    op.drop_table("households")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_tag"))
        batch_op.drop_index("ix_audit_events_household_at")

    op.drop_table("audit_events")
