"""sign-in factors sessions staff breaches outbox

Revision ID: e83bd86e9d2a
Revises: f8eb225ac712
Create Date: 2026-11-29 04:25:04.191258
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e83bd86e9d2a"
down_revision: str | Sequence[str] | None = "f8eb225ac712"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "breached_ranges",
        sa.Column("prefix", sa.String(length=5), nullable=False),
        sa.Column("suffix", sa.String(length=35), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("prefix", "suffix", name=op.f("pk_breached_ranges")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "staff_members",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email_index", sa.LargeBinary(), nullable=False),
        sa.Column("email_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("roles", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("password_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("password_must_change", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_members")),
        sa.UniqueConstraint("email_index", name=op.f("uq_staff_members_email_index")),
    )
    op.create_table(
        "factors",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("credential_id", sa.LargeBinary(), nullable=True),
        sa.Column("public_key", sa.LargeBinary(), nullable=True),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("household_id", sa.Uuid(), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("staff_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "(account_id IS NULL) <> (staff_id IS NULL)", name=op.f("ck_factors_one_owner")
        ),
        sa.ForeignKeyConstraint(
            ["household_id", "account_id"],
            ["accounts.household_id", "accounts.id"],
            name=op.f("fk_factors_household_id_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff_members.id"], name=op.f("fk_factors_staff_id_staff_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_factors")),
    )
    with op.batch_alter_table("factors", schema=None) as batch_op:
        batch_op.create_index("ix_factors_account", ["household_id", "account_id"], unique=False)
        batch_op.create_index("ix_factors_credential_id", ["credential_id"], unique=True)
        batch_op.create_index(batch_op.f("ix_factors_staff_id"), ["staff_id"], unique=False)

    op.create_table(
        "known_devices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("household_id", sa.Uuid(), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("staff_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "(account_id IS NULL) <> (staff_id IS NULL)", name=op.f("ck_known_devices_one_owner")
        ),
        sa.ForeignKeyConstraint(
            ["household_id", "account_id"],
            ["accounts.household_id", "accounts.id"],
            name=op.f("fk_known_devices_household_id_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff_members.id"], name=op.f("fk_known_devices_staff_id_staff_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_known_devices")),
    )
    with op.batch_alter_table("known_devices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_known_devices_account", ["household_id", "account_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_known_devices_staff_id"), ["staff_id"], unique=False)
        batch_op.create_index("ix_known_devices_token_hash", ["token_hash"], unique=True)

    op.create_table(
        "outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("household_id", sa.Uuid(), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("staff_id", sa.Uuid(), nullable=True),
        sa.Column("params_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=80), nullable=True),
        sa.ForeignKeyConstraint(
            ["household_id", "account_id"],
            ["accounts.household_id", "accounts.id"],
            name=op.f("fk_outbox_household_id_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff_members.id"], name=op.f("fk_outbox_staff_id_staff_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_household", ["household_id"], unique=False)
        batch_op.create_index("ix_outbox_pending", ["sent_at", "next_attempt_at"], unique=False)

    op.create_table(
        "recovery_codes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("household_id", sa.Uuid(), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("staff_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "(account_id IS NULL) <> (staff_id IS NULL)", name=op.f("ck_recovery_codes_one_owner")
        ),
        sa.ForeignKeyConstraint(
            ["household_id", "account_id"],
            ["accounts.household_id", "accounts.id"],
            name=op.f("fk_recovery_codes_household_id_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff_members.id"],
            name=op.f("fk_recovery_codes_staff_id_staff_members"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_recovery_codes_code_hash")),
    )
    with op.batch_alter_table("recovery_codes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_recovery_codes_account", ["household_id", "account_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_recovery_codes_staff_id"), ["staff_id"], unique=False)

    op.create_table(
        "sign_in_challenges",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("purpose", sa.String(length=24), nullable=False),
        sa.Column("session_kind", sa.String(length=8), nullable=False),
        sa.Column("breached", sa.Boolean(), nullable=False),
        sa.Column("via_link", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("webauthn_challenge", sa.LargeBinary(), nullable=True),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("household_id", sa.Uuid(), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("staff_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "(account_id IS NULL) <> (staff_id IS NULL)",
            name=op.f("ck_sign_in_challenges_one_owner"),
        ),
        sa.ForeignKeyConstraint(
            ["household_id", "account_id"],
            ["accounts.household_id", "accounts.id"],
            name=op.f("fk_sign_in_challenges_household_id_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff_members.id"],
            name=op.f("fk_sign_in_challenges_staff_id_staff_members"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_challenges")),
    )
    with op.batch_alter_table("sign_in_challenges", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sign_in_challenges_account", ["household_id", "account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_sign_in_challenges_staff_id"), ["staff_id"], unique=False
        )
        batch_op.create_index("ix_sign_in_challenges_token_hash", ["token_hash"], unique=True)

    with op.batch_alter_table("passwords", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("must_change", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("stage", sa.String(length=16), nullable=False, server_default="full")
        )
        batch_op.add_column(sa.Column("stepped_up_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("failed_step_ups", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("staff_id", sa.Uuid(), nullable=True))
        batch_op.alter_column("household_id", existing_type=sa.Uuid(), nullable=True)
        batch_op.alter_column("account_id", existing_type=sa.Uuid(), nullable=True)
        batch_op.drop_index(batch_op.f("ix_sessions_household_account"))
        batch_op.create_index("ix_sessions_account", ["household_id", "account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_staff_id"), ["staff_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_sessions_staff_id_staff_members"), "staff_members", ["staff_id"], ["id"]
        )
        batch_op.create_check_constraint("one_owner", "(account_id IS NULL) <> (staff_id IS NULL)")


def downgrade() -> None:
    # Employees' sessions have no place in the older table.
    op.execute("DELETE FROM sessions WHERE staff_id IS NOT NULL")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_constraint("one_owner", type_="check")
        batch_op.drop_constraint(
            batch_op.f("fk_sessions_staff_id_staff_members"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_sessions_staff_id"))
        batch_op.drop_index("ix_sessions_account")
        batch_op.create_index(
            batch_op.f("ix_sessions_household_account"),
            ["household_id", "account_id"],
            unique=False,
        )
        batch_op.alter_column("account_id", existing_type=sa.Uuid(), nullable=False)
        batch_op.alter_column("household_id", existing_type=sa.Uuid(), nullable=False)
        batch_op.drop_column("staff_id")
        batch_op.drop_column("failed_step_ups")
        batch_op.drop_column("stepped_up_at")
        batch_op.drop_column("stage")

    with op.batch_alter_table("passwords", schema=None) as batch_op:
        batch_op.drop_column("must_change")

    with op.batch_alter_table("sign_in_challenges", schema=None) as batch_op:
        batch_op.drop_index("ix_sign_in_challenges_token_hash")
        batch_op.drop_index(batch_op.f("ix_sign_in_challenges_staff_id"))
        batch_op.drop_index("ix_sign_in_challenges_account")

    op.drop_table("sign_in_challenges")
    with op.batch_alter_table("recovery_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recovery_codes_staff_id"))
        batch_op.drop_index("ix_recovery_codes_account")

    op.drop_table("recovery_codes")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_pending")
        batch_op.drop_index("ix_outbox_household")

    op.drop_table("outbox")
    with op.batch_alter_table("known_devices", schema=None) as batch_op:
        batch_op.drop_index("ix_known_devices_token_hash")
        batch_op.drop_index(batch_op.f("ix_known_devices_staff_id"))
        batch_op.drop_index("ix_known_devices_account")

    op.drop_table("known_devices")
    with op.batch_alter_table("factors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_factors_staff_id"))
        batch_op.drop_index("ix_factors_credential_id")
        batch_op.drop_index("ix_factors_account")

    op.drop_table("factors")
    op.drop_table("staff_members")
    op.drop_table("breached_ranges")
