"""Alembic environment: the URL comes from the project's settings, the metadata from core.models."""

from alembic import context
from sqlalchemy import create_engine

from core.models import Base
from core.settings import load_settings

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.attributes.get("database_url") or load_settings(require_jwt=False).database_url
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
run_migrations_online()
