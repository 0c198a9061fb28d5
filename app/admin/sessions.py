"""Console sign-in: an admin JWT, pasted once, becomes a short server-side session.

The browser holds only a random session id, in an ``HttpOnly``, ``SameSite=Strict`` cookie
scoped to ``/admin`` (``Secure`` outside development); Redis holds the session under the id's
SHA-256, so a copy of Redis yields no usable cookie. A session ends at ``ADMIN_SESSION_SECONDS``
or at its token's ``exp``, whichever comes first, or on sign-out. Each session has its own CSRF
token, required in every form the console posts (and compared in constant time).

One session per subject: a new sign-in ends the subject's previous session (its id is kept under
``admin:subject:<sha256(sub)>``), so a session left open elsewhere, or stolen, ends when its owner
signs in again. The session keeps the token's ``jti`` and ends at its ``exp``.

Sign-in attempts are counted per client address (:func:`sign_in_wait`), and a sign-in is the
API's own token checks plus the admin role (:func:`sign_in`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from app.auth import verify_admin_token

SESSION_COOKIE = "admin_session"
LOGIN_COOKIE = "admin_login"  # the sign-in form's own CSRF token (double submit), before any session
_KEY_PREFIX = "admin:session:"
_SUBJECT_PREFIX = "admin:subject:"
_SIGN_IN_PREFIX = "admin:sign-in:"


class SessionRefused(ValueError):
    """The token cannot start a session (it expires now: inside the leeway PyJWT allows)."""

    status = 401  # as app.auth.TokenRejected's for an invalid token


@dataclass(frozen=True)
class AdminSession:
    subject: str
    csrf: str
    expires_at: float
    jti: str | None = None


def _key(session_id: str) -> str:
    return _KEY_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def start_session(redis: Any, claims: dict[str, Any], max_seconds: int) -> tuple[str, AdminSession, int]:
    """A new session for the token's ``claims``: (cookie value, session, lifetime in seconds)."""
    now = time.time()
    lifetime = int(min(max_seconds, float(claims["exp"]) - now))
    if lifetime <= 0:
        raise SessionRefused("the token has expired (or expires now)")
    session_id = secrets.token_urlsafe(32)
    jti = claims.get("jti")
    session = AdminSession(
        subject=str(claims.get("sub")),
        csrf=secrets.token_urlsafe(32),
        expires_at=now + lifetime,
        jti=jti if isinstance(jti, str) else None,
    )
    owner = _SUBJECT_PREFIX + hashlib.sha256(session.subject.encode()).hexdigest()
    previous = redis.get(owner)
    pipe = redis.pipeline()
    if previous:
        pipe.delete(previous.decode())  # one session per subject: the new sign-in ends the old one
    pipe.set(_key(session_id), json.dumps(session.__dict__), ex=lifetime)
    pipe.set(owner, _key(session_id), ex=lifetime)
    pipe.execute()
    return session_id, session, lifetime


def sign_in(redis: Any, token: str, max_seconds: int) -> tuple[str, AdminSession, int]:
    """A session for an admin's ``token`` (the same checks as a request's ``Authorization``
    header, plus the admin role): (cookie value, session, lifetime in seconds). Raises
    :class:`app.auth.TokenRejected` or :class:`SessionRefused`, each with its ``status``."""
    return start_session(redis, verify_admin_token(token.strip()), max_seconds)


def sign_in_wait(redis: Any, address: str, per_minute: int) -> int:
    """Count a sign-in attempt from ``address``; seconds until it may try again (0: now).

    ``per_minute`` attempts per client address (``ADMIN_SIGN_IN_PER_MINUTE``), counted in Redis
    a fixed minute at a time, under the address's SHA-256. Guessing a token is hopeless anyway;
    this keeps a flood of sign-ins from costing a verification each."""
    key = _SIGN_IN_PREFIX + hashlib.sha256(address.encode()).hexdigest()
    pipe = redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, 60, nx=True)
    pipe.pttl(key)
    attempts, _, ttl_ms = pipe.execute()
    return max(1, math.ceil(ttl_ms / 1000)) if attempts > per_minute else 0


def new_login_token() -> str:
    """The sign-in form's own CSRF token, before any session (kept in :data:`LOGIN_COOKIE`)."""
    return secrets.token_urlsafe(32)


def load_session(redis: Any, session_id: str | None) -> AdminSession | None:
    if not session_id or len(session_id) > 100:
        return None
    value = redis.get(_key(session_id))
    if value is None:
        return None
    session = AdminSession(**json.loads(value))
    return session if session.expires_at > time.time() else None


def end_session(redis: Any, session_id: str | None) -> None:
    if session_id:
        redis.delete(_key(session_id))


def same_token(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of two CSRF tokens (False if either is missing). Compared as
    bytes: ``hmac.compare_digest`` raises TypeError for a ``str`` that is not ASCII."""
    if not expected or not given:
        return False
    return hmac.compare_digest(
        str(expected).encode("utf-8", "surrogatepass"), str(given).encode("utf-8", "surrogatepass")
    )
