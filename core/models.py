"""SQLAlchemy models: the canonical resources and the audit trail of events that built them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Index, String, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Resource(Base):
    """The newest known state of one device (``id`` = ``device_id``).

    ``event_at``/``event_request_id`` identify the event that produced this state; an event
    replaces it only if it is newer by that pair, so replays never move a resource back in time.
    ``version`` counts applied changes and orders cache writes.
    """

    __tablename__ = "resources"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    event_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    event_request_id: Mapped[str] = mapped_column(UUID(as_uuid=False), nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Event(Base):
    """Every accepted event, once (``request_id`` is unique, so redelivery is a no-op)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_device_received", "device_id", "received_at"),
        Index(
            "ux_events_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    request_id: Mapped[str] = mapped_column(UUID(as_uuid=False), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), nullable=False)
    user_id: Mapped[str | None] = mapped_column(String(256))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    processed_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    applied: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # sha256 of (token subject, Idempotency-Key): a retried request with the same key is stored once
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
