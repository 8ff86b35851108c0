"""account recoveries

Revision ID: b6a2142ab6eb
Revises: 61de02cf31c9
Create Date: 2026-12-07 14:04:31.148818
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b6a2142ab6eb"
down_revision: str | Sequence[str] | None = "61de02cf31c9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_recoveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("webauthn_challenge", sa.LargeBinary(), nullable=True),
        sa.Column("new_password_hash", sa.String(length=200), nullable=True),
        sa.Column("delay_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_hash", sa.LargeBinary(), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["household_id", "account_id"],
            ["accounts.household_id", "accounts.id"],
            name=op.f("fk_account_recoveries_household_id_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_recoveries")),
    )
    with op.batch_alter_table("account_recoveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_account_recoveries_account",
            ["household_id", "account_id", "created_at"],
            unique=False,
        )
        batch_op.create_index("ix_account_recoveries_cancel_hash", ["cancel_hash"], unique=True)
        batch_op.create_index("ix_account_recoveries_due", ["state", "delay_until"], unique=False)
        batch_op.create_index("ix_account_recoveries_token_hash", ["token_hash"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("account_recoveries", schema=None) as batch_op:
        batch_op.drop_index("ix_account_recoveries_token_hash")
        batch_op.drop_index("ix_account_recoveries_due")
        batch_op.drop_index("ix_account_recoveries_cancel_hash")
        batch_op.drop_index("ix_account_recoveries_account")

    op.drop_table("account_recoveries")
