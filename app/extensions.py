"""Unbound Flask extensions, bound to the app in ``create_app``. Nothing else lives here."""

from flask_caching import Cache
from flask_jwt_extended import JWTManager

jwt = JWTManager()
cache = Cache()
