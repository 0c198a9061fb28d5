"""The HTTP service: a Flask application factory.

Modules never import an application object; they use ``current_app``. Extensions are created
unbound in :mod:`app.extensions` and bound here.
"""

from __future__ import annotations

from flask import Flask

from core.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API. ``settings`` defaults to the process environment (validated)."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    register_blueprints(app)
    return app


def register_blueprints(app: Flask) -> None:
    from app.health import blueprint as health

    app.register_blueprint(health)
