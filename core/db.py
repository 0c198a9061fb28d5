"""Engine and session factory, one pool per process, created by the entry point (never at import)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings


def make_engine(settings: Settings, **overrides: object) -> Engine:
    """A pooled engine for this process. Call after gunicorn forks (sockets do not survive fork)."""
    options: dict[str, object] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_pre_ping": True,  # RDS failovers and idle timeouts close connections under us
        "pool_recycle": 1800,
        "pool_timeout": 5,
        # statement parameters (device payloads) never reach exception messages, hence neither logs,
        # dead letters' exception.message nor the console
        "hide_parameters": True,
        # Every wait bounded: connecting, each statement and each lock wait (server-side), and TCP
        # keepalives so a connection to a vanished server is noticed instead of hanging.
        "connect_args": {
            "connect_timeout": settings.db_connect_timeout_seconds,
            "application_name": settings.kafka_client_id,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms} "
            f"-c lock_timeout={settings.db_lock_timeout_ms}",
            "keepalives": 1,
            "keepalives_idle": settings.db_keepalives_idle_seconds,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    }
    options.update(overrides)
    return create_engine(settings.database_url, **options)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
