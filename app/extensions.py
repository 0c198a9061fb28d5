"""Unbound Flask extensions, bound to the app in ``create_app``. Nothing else lives here."""

from flask_caching import Cache

from app.jwt_manager import SingleDecodeJWTManager

jwt = SingleDecodeJWTManager()
cache = Cache()
