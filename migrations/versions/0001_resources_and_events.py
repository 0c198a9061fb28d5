"""resources and events

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_request_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "events",
        sa.Column("request_id", postgresql.UUID(as_uuid=False), primary_key=True),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(256)),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("applied", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_events_device_received", "events", ["device_id", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_events_device_received", table_name="events")
    op.drop_table("events")
    op.drop_table("resources")
