"""JWT authentication (flask-jwt-extended), role checks and device scope.

Tokens carry the identity in ``sub`` and roles in a ``roles`` list. Every authentication failure
(missing, malformed, ``alg: none``, bad signature, expired) is a JSON 401; a valid token without
a required role, or acting outside its device scope, is a JSON 403.

Device scope: a token's ``device_id`` claim (one id) or ``devices`` claim (a list). A caller with
the ``device`` role and not ``admin`` acts only for the ids in its scope; one stolen device
credential must not write every device's state. A ``device`` token without a scope claim is
refused in production and allowed in development (the architecture document's walk-through
token has none). ``admin`` acts on any id; ``user`` reads any id unless its token carries a
``devices`` claim, which then limits it.

Claims of the wrong shape fail closed (:func:`claims_problem`, a 401 on every route): ``roles``
and ``devices`` must be lists of strings and ``device_id`` a string when present, so that
``"devices": "dev-1"`` can never be read as "no limit" and ``roles: [["admin"]]`` never reaches
a set; ``sub`` must be a string PostgreSQL and UTF-8 can hold (1-256 characters, the length of
``events.user_id``, no NUL and no lone surrogate), since it is stored with every event and names
the subject's rate-limit and idempotency keys in Redis.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import jwt as pyjwt
from flask import Flask
from flask_jwt_extended import get_jwt, verify_jwt_in_request

from app.errors import error_response
from app.extensions import jwt
from app.jwks import KeySet
from app.services import services
from app.services import settings as current_settings
from app.verified_tokens import VerifiedTokens
from core.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
MAX_SUBJECT_LENGTH = 256  # events.user_id is VARCHAR(256)
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")  # PostgreSQL text holds no NUL; UTF-8 no lone surrogate


def configure_jwt(app: Flask, settings: Settings) -> None:
    app.config.update(
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ALGORITHM=settings.jwt_algorithm,
        JWT_DECODE_ALGORITHMS=[settings.jwt_algorithm],  # explicit: never "none", never a switch of family
        JWT_IDENTITY_CLAIM="sub",
        JWT_DECODE_LEEWAY=settings.jwt_leeway_seconds,
        JWT_DECODE_AUDIENCE=settings.jwt_audience,  # None: aud not checked
        JWT_DECODE_ISSUER=settings.jwt_issuer,  # None: iss not checked
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
    jwt.token_verification_failed_loader(
        lambda header, payload: unauthorized("token rejected: it must expire, within JWT_MAX_TTL_SECONDS")
    )
    jwt.revoked_token_loader(lambda header, payload: unauthorized("token has been revoked"))
    jwt.needs_fresh_token_loader(lambda header, payload: unauthorized("fresh token required"))

    # The JWTManager is shared by every app of the process: its callbacks read the current app.
    jwt.token_verification_loader(_within_policy)
    jwt.decode_key_loader(_verification_key)


def build_verified_tokens(settings: Settings) -> VerifiedTokens | None:
    """The claims of tokens verified lately (:mod:`app.verified_tokens`); None when
    ``JWT_VERIFIED_CACHE_SECONDS`` is 0."""
    if settings.jwt_verified_cache_seconds <= 0:
        return None
    return VerifiedTokens(max_age=settings.jwt_verified_cache_seconds, leeway=settings.jwt_leeway_seconds)


def build_key_set(settings: Settings) -> KeySet | None:
    """The identity provider's keys (``JWT_JWKS_URL``, RS*/ES* only); None without one. The key
    set expires after ``JWT_JWKS_CACHE_SECONDS``, and each key with it (:mod:`app.jwks`)."""
    if not settings.jwt_jwks_url or settings.jwt_algorithm.startswith("HS"):
        return None
    return KeySet(settings.jwt_jwks_url, lifespan=settings.jwt_jwks_cache_seconds)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def claims_problem(claims: dict[str, Any]) -> str | None:
    """Why the verified ``claims`` are of a shape this API refuses, or None (module docstring)."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH or _UNSTORABLE.search(subject):
        return f"the token's sub must be 1-{MAX_SUBJECT_LENGTH} characters of valid text"
    if "roles" in claims and not _strings(claims["roles"]):
        return "the token's roles must be a list of strings"
    if "device_id" in claims and not isinstance(claims["device_id"], str):
        return "the token's device_id must be a string"
    if "devices" in claims and not _strings(claims["devices"]):
        return "the token's devices must be a list of strings"
    return None


def _within_policy(header: dict[str, Any], claims: dict[str, Any]) -> bool:
    """A token must expire, and not too far ahead: a stolen token is worth at most
    JWT_MAX_TTL_SECONDS (measured from iat, or from now for a token without one)."""
    expires = claims.get("exp")
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        return False
    issued = claims.get("iat")
    start = issued if isinstance(issued, int | float) and not isinstance(issued, bool) else time.time()
    policy = current_settings()
    return expires - start <= policy.jwt_max_ttl_seconds + policy.jwt_leeway_seconds


def _verification_key(header: dict[str, Any], claims: dict[str, Any]) -> Any:
    """The HS secret or the RS public key; with ``JWT_JWKS_URL``, the identity provider's key
    named by the token's ``kid``, as real providers rotate keys. A token without ``kid``, or with
    one the provider does not publish, is a 401."""
    keys = services().jwks
    if keys is None:
        config = current_settings()
        return config.jwt_secret if config.jwt_algorithm.startswith("HS") else config.jwt_public_key
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise pyjwt.InvalidTokenError("the token names no key (kid)")
    try:
        return keys.key(kid)
    except pyjwt.PyJWTError as exc:  # no such kid, an empty or malformed key set, the provider away
        raise pyjwt.InvalidTokenError(f"no usable key {kid!r} at the identity provider") from exc


class TokenRejected(Exception):
    """A token refused at the console's sign-in: ``status`` 401 (not valid) or 403 (no admin role)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def verify_admin_token(token: str) -> dict[str, Any]:
    """The claims of ``token`` if it is valid under this API's policy and grants ``admin``
    (the console's sign-in: the same checks as a request's ``Authorization`` header)."""
    from flask_jwt_extended import decode_token

    try:
        claims = decode_token(token)
    except Exception as exc:  # every decoding failure is the same answer: not a valid token
        raise TokenRejected(401, "this is not a valid token, or it has expired") from exc
    if not _within_policy({}, claims):
        raise TokenRejected(401, "token rejected: it must expire, within JWT_MAX_TTL_SECONDS")
    problem = claims_problem(claims)
    if problem is not None:
        raise TokenRejected(401, problem)
    if claims.get("type") == "refresh":  # as verify_jwt_in_request refuses it on every API route
        raise TokenRejected(401, "only an access token signs in, not a refresh token")
    if "admin" not in _roles(claims):
        raise TokenRejected(403, "the console is for the admin role only")
    return claims


def roles_required(*roles: str) -> Callable[[F], F]:
    """Allow the request if the token's ``roles`` share at least one role with ``roles``."""
    allowed = frozenset(roles)

    def decorator(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            verify_jwt_in_request()
            claims = get_jwt()
            problem = claims_problem(claims)
            if problem is not None:
                return error_response(401, "unauthorized", problem)
            if not allowed.intersection(claims.get("roles") or ()):
                return error_response(403, "forbidden", f"requires one of the roles: {', '.join(sorted(allowed))}")
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def _roles(claims: dict[str, Any]) -> set[str]:
    """The token's roles (claims already passed :func:`claims_problem`)."""
    return set(claims.get("roles") or ())


def device_scope(claims: dict[str, Any]) -> frozenset[str] | None:
    """The ids a token may act for (``device_id`` or ``devices``); None if it names none."""
    scope: set[str] = set()
    if isinstance(claims.get("device_id"), str):
        scope.add(claims["device_id"])
    devices = claims.get("devices")
    if isinstance(devices, list):
        scope.update(d for d in devices if isinstance(d, str))
    return frozenset(scope) if "device_id" in claims or "devices" in claims else None


def scope_denial(resource_id: str, *, reading: bool) -> Any | None:
    """A 403 response if the request's token may not act for ``resource_id``, else None.

    Call after :func:`roles_required` (the token is verified and its roles checked).
    """
    claims = get_jwt()
    roles = _roles(claims)
    if "admin" in roles:
        return None
    scope = device_scope(claims)
    if "device" in roles:
        if scope is None:
            if current_settings().is_development:
                return None
            return error_response(403, "forbidden", "a device token must name its device (device_id or devices)")
        if resource_id not in scope:
            return error_response(403, "forbidden", f"this token may not act for {resource_id!r}")
        return None
    if reading and "devices" in claims and resource_id not in (scope or ()):
        return error_response(403, "forbidden", f"this token may not read {resource_id!r}")
    return None
