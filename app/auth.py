"""JWT authentication (flask-jwt-extended) and role checks.

Tokens carry the identity in ``sub`` and roles in a ``roles`` list. Every authentication failure
(missing, malformed, ``alg: none``, bad signature, expired) is a JSON 401; a valid token without
a required role is a JSON 403.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask
from flask_jwt_extended import get_jwt, verify_jwt_in_request

from app.errors import error_response
from app.extensions import jwt
from core.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def configure_jwt(app: Flask, settings: Settings) -> None:
    app.config.update(
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ALGORITHM=settings.jwt_algorithm,
        JWT_DECODE_ALGORITHMS=[settings.jwt_algorithm],  # explicit: never "none", never a switch of family
        JWT_IDENTITY_CLAIM="sub",
        JWT_DECODE_LEEWAY=settings.jwt_leeway_seconds,
        JWT_ACCESS_TOKEN_EXPIRES=False,  # only tokens minted here (the dev `token` command) use it
    )
    if settings.jwt_algorithm.startswith("HS"):
        app.config["JWT_SECRET_KEY"] = settings.jwt_secret
    else:
        app.config["JWT_PUBLIC_KEY"] = settings.jwt_public_key
        app.config["JWT_SECRET_KEY"] = None
    jwt.init_app(app)

    def unauthorized(message: str) -> Any:
        return error_response(401, "unauthorized", message)

    jwt.unauthorized_loader(lambda reason: unauthorized("missing or malformed Authorization header"))
    jwt.invalid_token_loader(lambda reason: unauthorized("invalid token"))
    jwt.expired_token_loader(lambda header, payload: unauthorized("token has expired"))
    jwt.token_verification_failed_loader(lambda header, payload: unauthorized("token verification failed"))
    jwt.revoked_token_loader(lambda header, payload: unauthorized("token has been revoked"))
    jwt.needs_fresh_token_loader(lambda header, payload: unauthorized("fresh token required"))


def roles_required(*roles: str) -> Callable[[F], F]:
    """Allow the request if the token's ``roles`` share at least one role with ``roles``."""
    allowed = frozenset(roles)

    def decorator(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            verify_jwt_in_request()
            granted = get_jwt().get("roles") or []
            if isinstance(granted, str):
                granted = [granted]
            if not allowed.intersection(granted if isinstance(granted, list) else []):
                return error_response(403, "forbidden", f"requires one of the roles: {', '.join(sorted(allowed))}")
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
