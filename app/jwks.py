"""The identity provider's signing keys (``JWT_JWKS_URL``), by ``kid``, that expire with the key set.

PyJWT's ``PyJWKClient(cache_keys=True)`` wraps ``get_signing_key`` in an ``lru_cache`` with no
expiry (PyJWT 2.15): a ``kid`` the provider withdrew, because its private key leaked, kept
verifying tokens in every process that had ever used it, until a restart. Here only the key set
is cached, for ``JWT_JWKS_CACHE_SECONDS``; each lookup reads the current set, so a withdrawn key
is refused once the set is fetched again. An unknown ``kid`` makes PyJWT fetch the set at once,
at most once per cooldown (30 s), so tokens with invented ``kid`` values cannot hammer the
provider. If the provider cannot be reached when the set has expired, tokens are refused (401):
failing closed, as a key that may have been withdrawn must not be trusted on the strength of an
old copy.

:meth:`KeySet.expires_at` tells the verified-token cache (:mod:`app.verified_tokens`) when the
set it verified against goes stale, so a remembered token never outlives its key either.
"""

from __future__ import annotations

import time
from typing import Any

import jwt as pyjwt


class KeySet:
    """Signing keys from a JWKS URL, fetched again every ``lifespan`` seconds."""

    def __init__(self, url: str, lifespan: float, timeout: float = 5) -> None:
        self.lifespan = lifespan
        self._client = pyjwt.PyJWKClient(url, cache_keys=False, lifespan=lifespan, timeout=timeout)

    def key(self, kid: str) -> Any:
        """The public key named ``kid`` in the current set. Raises ``jwt.PyJWKClientError``."""
        return self._client.get_signing_key(kid).key

    def expires_at(self) -> float | None:
        """When (``time.time()`` clock) the key set in use is fetched again; None if none is held."""
        cache = self._client.jwk_set_cache
        held = cache.jwk_set_with_timestamp if cache is not None else None
        if held is None:
            return None
        return time.time() + (held.get_timestamp() + self.lifespan - time.monotonic())
