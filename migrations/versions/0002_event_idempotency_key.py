"""events.idempotency_key: a device's retry with the same Idempotency-Key is stored once

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("idempotency_key", sa.String(64)))
    op.create_index(
        "ux_events_idempotency_key",
        "events",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ux_events_idempotency_key", table_name="events")
    op.drop_column("events", "idempotency_key")
