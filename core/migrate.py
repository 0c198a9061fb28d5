"""Apply database migrations: ``python -m core.migrate`` (what ``make migrate`` runs)."""

from __future__ import annotations

import os

from alembic import command
from alembic.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    """Upgrade the schema to ``revision``; ``database_url`` defaults to the settings' database."""
    config = Config(os.path.join(ROOT, "alembic.ini"))
    if database_url:
        config.attributes["database_url"] = database_url
    command.upgrade(config, revision)


if __name__ == "__main__":
    upgrade()
