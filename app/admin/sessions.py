"""Console sign-in: an admin JWT, pasted once, becomes a short server-side session.

The browser holds only a random session id, in an ``HttpOnly``, ``SameSite=Strict`` cookie
scoped to ``/admin`` (``Secure`` outside development); Redis holds the session under the id's
SHA-256, so a copy of Redis yields no usable cookie. A session ends at ``ADMIN_SESSION_SECONDS``
or at its token's ``exp``, whichever comes first, or on sign-out. Each session has its own CSRF
token, required in every form the console posts (and compared in constant time).

One session per subject: a new sign-in ends the subject's previous session (its id is kept under
``admin:subject:<sha256(sub)>``), so a session left open elsewhere, or stolen, ends when its owner
signs in again. The session keeps the token's ``jti`` and ends at its ``exp``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

SESSION_COOKIE = "admin_session"
LOGIN_COOKIE = "admin_login"  # the sign-in form's own CSRF token (double submit), before any session
_KEY_PREFIX = "admin:session:"
_SUBJECT_PREFIX = "admin:subject:"


class SessionRefused(ValueError):
    """The token cannot start a session (it expires now: inside the leeway PyJWT allows)."""


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
