"""passkeys: user handles and single-use ceremonies

`factors.user_handle` is the random WebAuthn user handle an owner"s credentials carry,
so a usernameless assertion names its owner (NULL for credentials made before). The
`sign_in_challenges.user_handle` keeps the handle a registration ceremony offered. The
`passkey_ceremonies` table holds the challenges of usernameless sign-ins, each used once.

Revision ID: 393728e06cbc
Revises: b6a2142ab6eb
Create Date: 2026-12-07 14:03:45.275263
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "393728e06cbc"
down_revision: str | Sequence[str] | None = "b6a2142ab6eb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "passkey_ceremonies",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("challenge", sa.LargeBinary(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_passkey_ceremonies")),
    )
    with op.batch_alter_table("passkey_ceremonies", schema=None) as batch_op:
        batch_op.create_index("ix_passkey_ceremonies_challenge", ["challenge"], unique=True)
        batch_op.create_index("ix_passkey_ceremonies_expires_at", ["expires_at"], unique=False)

    with op.batch_alter_table("factors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_handle", sa.LargeBinary(), nullable=True))
        batch_op.create_index("ix_factors_user_handle", ["user_handle"], unique=False)

    with op.batch_alter_table("sign_in_challenges", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_handle", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sign_in_challenges", schema=None) as batch_op:
        batch_op.drop_column("user_handle")

    with op.batch_alter_table("factors", schema=None) as batch_op:
        batch_op.drop_index("ix_factors_user_handle")
        batch_op.drop_column("user_handle")

    with op.batch_alter_table("passkey_ceremonies", schema=None) as batch_op:
        batch_op.drop_index("ix_passkey_ceremonies_expires_at")
        batch_op.drop_index("ix_passkey_ceremonies_challenge")

    op.drop_table("passkey_ceremonies")
