"""Console sign-in: an admin JWT, pasted once, becomes a short server-side session.

The browser holds only a random session id, in an ``HttpOnly``, ``SameSite=Strict`` cookie
scoped to ``/admin`` (``Secure`` outside development); Redis holds the session under the id's
SHA-256, so a copy of Redis yields no usable cookie. A session ends at ``ADMIN_SESSION_SECONDS``
or at its token's ``exp``, whichever comes first, or on sign-out. Each session has its own CSRF
token, required in every form the console posts (and compared in constant time).
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


@dataclass(frozen=True)
class AdminSession:
    subject: str
    csrf: str
    expires_at: float


def _key(session_id: str) -> str:
    return _KEY_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def start_session(redis: Any, claims: dict[str, Any], max_seconds: int) -> tuple[str, AdminSession, int]:
    """A new session for the token's ``claims``: (cookie value, session, lifetime in seconds)."""
    now = time.time()
    lifetime = int(min(max_seconds, float(claims["exp"]) - now))
    if lifetime <= 0:
        raise ValueError("the token expires now")
    session_id = secrets.token_urlsafe(32)
    session = AdminSession(subject=str(claims.get("sub")), csrf=secrets.token_urlsafe(32), expires_at=now + lifetime)
    redis.set(_key(session_id), json.dumps(session.__dict__), ex=lifetime)
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
    """Constant-time comparison of two CSRF tokens (False if either is missing)."""
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
