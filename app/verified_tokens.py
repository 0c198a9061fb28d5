"""Claims of the tokens this process verified lately, so a token's next request skips PyJWT.

A device sends many requests with one token; verifying it again each time (base64, two JSON
parses, an HMAC or RSA check, the claim checks) was a large share of a cache hit's CPU (the JWT
share before and after is in ``docs/performance.md``). Gateways do the same (Envoy's
``jwt_authn`` keeps a verified-JWT cache).

What it keeps and for how long, and why that is safe:

- Only tokens that passed full verification enter, keyed by the whole encoded token (header,
  claims and signature): a forged or altered token is a different key and is verified in full.
  Junk cannot fill the cache, because junk is never stored.
- An entry is served only while the token itself would still pass: until its ``exp`` (plus the
  leeway PyJWT allows), never longer than ``max_age`` seconds, and never past the expiry of the
  JWKS key set it was verified with (``not_after``): a key withdrawn from the JWKS stops working
  within ``JWT_JWKS_CACHE_SECONDS``, whatever ``max_age`` is.
- Everything after decoding (token type, the TTL policy, roles, device scope) still runs on
  every request; only the signature and claim decoding is skipped.
- Bounded: at most ``max_entries``; the oldest entry goes first.

One instance per Flask app (its settings: key, algorithms, audience), held in its services
(:attr:`app.services.Services.verified_tokens`); gevent switches greenlets only at I/O, so dict
operations need no lock.
"""

from __future__ import annotations

import time
from typing import Any

DEFAULT_MAX_ENTRIES = 4096


class VerifiedTokens:
    """A bounded map from encoded token to its verified claims, each with a deadline."""

    def __init__(self, max_age: float, leeway: float, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_age = max_age
        self.leeway = leeway
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, dict[str, Any]]] = {}

    def get(self, token: str, now: float | None = None) -> dict[str, Any] | None:
        """A copy of ``token``'s claims if it was verified and is still within its deadline."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        deadline, claims = entry
        if (time.time() if now is None else now) >= deadline:
            self._entries.pop(token, None)
            return None
        return dict(claims)  # callers get their own dict: one request cannot change another's

    def put(self, token: str, claims: dict[str, Any], now: float | None = None, not_after: float | None = None) -> None:
        """Remember ``claims`` of a token that has just passed verification, at most until
        ``not_after`` (when the key it was verified with may be gone)."""
        if self.max_age <= 0:
            return
        now = time.time() if now is None else now
        deadline = now + self.max_age
        expires = claims.get("exp")
        if isinstance(expires, int | float) and not isinstance(expires, bool):
            deadline = min(deadline, expires + self.leeway)  # PyJWT accepts it until exp + leeway
        if not_after is not None:
            deadline = min(deadline, not_after)
        if deadline <= now:
            return
        while len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))  # the oldest entry (dicts keep insertion order)
        self._entries[token] = (deadline, dict(claims))

    def __len__(self) -> int:
        return len(self._entries)
