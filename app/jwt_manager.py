"""A JWTManager that decodes each token once.

flask-jwt-extended 4.7 decodes every token twice: once without verifying, to hand the claims
to the key loader, then again for real. Our key loader needs only the header (the algorithm's
key, or the ``kid`` for a JWKS), so the unverified pass is pure cost (what it cost is in
``docs/performance.md``). This subclass reads the header alone, picks the key, and verifies once.

It overrides a private method, so the module checks the pinned version and the private names it
relies on at import and fails loudly on a mismatch (as ``broker/brokers/kafka/internals.py``
does for kafka-python): an upgrade must look at this file again.
"""

from __future__ import annotations

from typing import Any

import flask_jwt_extended
import jwt as pyjwt
from flask_jwt_extended import JWTManager
from flask_jwt_extended import tokens as _tokens
from flask_jwt_extended.config import config as _config

from app.services import services

PINNED_VERSION = "4.7.4"


class JWTInternalsError(RuntimeError):
    """flask-jwt-extended is not the version whose private decode path this module replaces."""


def check_internals() -> None:
    """Raise :class:`JWTInternalsError` unless the private names used below exist as expected."""
    if flask_jwt_extended.__version__ != PINNED_VERSION:
        raise JWTInternalsError(
            f"flask-jwt-extended {flask_jwt_extended.__version__} installed, app/jwt_manager.py was "
            f"written against {PINNED_VERSION}: check JWTManager._decode_jwt_from_config again"
        )
    missing = [
        name
        for name, present in (
            ("JWTManager._decode_jwt_from_config", hasattr(JWTManager, "_decode_jwt_from_config")),
            ("JWTManager._decode_key_callback", hasattr(JWTManager(), "_decode_key_callback")),
            ("flask_jwt_extended.tokens._decode_jwt", hasattr(_tokens, "_decode_jwt")),
        )
        if not present
    ]
    if missing:
        raise JWTInternalsError(f"flask-jwt-extended lacks {', '.join(missing)}")


check_internals()


class SingleDecodeJWTManager(JWTManager):
    """Verify each token with one PyJWT decode; the key loader sees the header and no claims.

    A token verified lately by this app is not decoded again (:mod:`app.verified_tokens`, held
    in :attr:`app.services.Services.verified_tokens` when the app enables it).
    """

    def _decode_jwt_from_config(self, encoded_token: str, csrf_value: Any = None, allow_expired: bool = False) -> dict:
        state = services()
        verified = state.verified_tokens if csrf_value is None and not allow_expired else None
        if verified is not None:
            claims = verified.get(encoded_token)
            if claims is not None:
                return claims
            claims = self._verify(encoded_token, csrf_value, allow_expired)
            keys = state.jwks  # a remembered token never outlives its key set
            verified.put(encoded_token, claims, not_after=keys.expires_at() if keys is not None else None)
            return claims
        return self._verify(encoded_token, csrf_value, allow_expired)

    def _verify(self, encoded_token: str, csrf_value: Any, allow_expired: bool) -> dict:
        header = pyjwt.get_unverified_header(encoded_token)  # base64 + JSON of the first segment
        secret = self._decode_key_callback(header, {})
        kwargs = {
            "algorithms": _config.decode_algorithms,
            "audience": _config.decode_audience,
            "csrf_value": csrf_value,
            "encoded_token": encoded_token,
            "identity_claim_key": _config.identity_claim_key,
            "issuer": _config.decode_issuer,
            "leeway": _config.leeway,
            "secret": secret,
            "verify_aud": _config.decode_audience is not None,
            "verify_sub": _config.verify_sub,
        }
        try:
            return _tokens._decode_jwt(**kwargs, allow_expired=allow_expired)
        except pyjwt.ExpiredSignatureError as exc:
            # the expired-token callback receives header and claims, as upstream gives them
            exc.jwt_header = header  # type: ignore[attr-defined]
            exc.jwt_data = _tokens._decode_jwt(**kwargs, allow_expired=True)  # type: ignore[attr-defined]
            raise
