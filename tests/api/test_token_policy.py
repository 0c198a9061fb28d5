"""Token policy and the attack matrix: every forged, stale, overlong or misdirected token is a
JSON 401, and no token ever reaches the logs (issue 9, item 2)."""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app import create_app
from tests.helpers import wait_for

NOT_JSON_EVENT = "not json"  # an authenticated request then fails validation (400) without any server


def _rsa_pair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


@pytest.fixture(scope="module")
def rsa_keys():
    return _rsa_pair(), _rsa_pair()  # (ours, an attacker's)


@pytest.fixture
def rs_client(settings, api_broker, rsa_keys):
    (_, public), _ = rsa_keys
    rs = settings.replace(
        jwt_algorithm="RS256", jwt_public_key=public, jwt_audience="device-api", jwt_issuer="https://idp"
    )
    return create_app(rs, broker=api_broker).test_client()


def _claims(**changes) -> dict:
    now = int(time.time())
    claims = {"sub": "attacker", "roles": ["admin"], "iat": now, "exp": now + 600}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["roles"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _alg_none() -> str:
    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(_claims())}."


HS_SECRET = "local-dev-secret"
LATER = int(time.time()) + 2 * 86400  # beyond JWT_MAX_TTL_SECONDS (24 h)


def _hs(**changes) -> str:
    return pyjwt.encode(_claims(**changes), HS_SECRET, algorithm="HS256")


HS_CASES = {
    "alg none": lambda: _alg_none(),
    "tampered payload": lambda: _tampered(_hs(roles=["user"])),
    "wrong key": lambda: pyjwt.encode(_claims(), "another-secret-of-thirty-two-bytes!!", algorithm="HS256"),
    "expired": lambda: _hs(exp=int(time.time()) - 120),
    "no exp": lambda: _hs(exp=None),
    "lifetime over the cap": lambda: _hs(exp=LATER),
    "no iat, far exp": lambda: _hs(iat=None, exp=LATER),
    "future nbf": lambda: _hs(nbf=int(time.time()) + 600),
    "future iat": lambda: _hs(iat=int(time.time()) + 600),
    "100 KB token": lambda: "eyJhbGciOiJIUzI1NiJ9." + "A" * 100_000 + ".sig",
}


def _assert_401_and_unlogged(client, token, caplog):
    caplog.set_level(logging.DEBUG)
    response = client.post("/events", data=NOT_JSON_EVENT, headers={"Authorization": f"Bearer {token}",
                                                                   "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 401, response.json
    assert response.is_json and response.json["error"] == "unauthorized"
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert token[:40] not in logged and token[-40:] not in logged


@pytest.mark.parametrize("case", HS_CASES)
def test_every_bad_hs256_token_is_a_json_401_and_never_logged(client, caplog, case):
    _assert_401_and_unlogged(client, HS_CASES[case](), caplog)


def test_clock_skew_within_the_leeway_is_accepted(client, settings):
    token = _hs(exp=int(time.time()) - settings.jwt_leeway_seconds // 2)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    response = client.post("/events", data=NOT_JSON_EVENT, headers=headers)
    assert response.status_code == 400  # authenticated; the body is what is wrong


def _rs_token(private: bytes, **changes) -> str:
    return pyjwt.encode(_claims(**{"aud": "device-api", "iss": "https://idp", **changes}), private, algorithm="RS256")


def test_rs256_accepts_the_providers_token_for_this_audience_and_issuer(rs_client, rsa_keys):
    (private, _), _ = rsa_keys
    response = rs_client.post("/events", data=NOT_JSON_EVENT, headers={"Authorization": f"Bearer {_rs_token(private)}",
                                                                      "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 400


@pytest.mark.parametrize("case", ["hs/rs confusion", "wrong key", "wrong aud", "wrong iss", "no aud"])
def test_every_bad_rs256_token_is_a_json_401_and_never_logged(rs_client, rsa_keys, caplog, case):
    (private, public), (attacker, _) = rsa_keys
    token = {
        # the public key is public: signing HS256 with it as the HMAC secret must not pass
        "hs/rs confusion": lambda: _hmac_with(public),
        "wrong key": lambda: _rs_token(attacker),
        "wrong aud": lambda: _rs_token(private, aud="another-api"),
        "wrong iss": lambda: _rs_token(private, iss="https://evil"),
        "no aud": lambda: pyjwt.encode(_claims(iss="https://idp"), private, algorithm="RS256"),
    }[case]()
    _assert_401_and_unlogged(rs_client, token, caplog)


def _hmac_with(secret: str) -> str:
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(_claims()).encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


class _JwksServer:
    """A JWKS endpoint on a free loopback port (a thread) whose keys a test can withdraw."""

    def __init__(self, keys: dict[str, dict]) -> None:
        import http.server
        import threading

        self.keys = dict(keys)
        self.fetches = 0
        outer = self

        class Keys(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.fetches += 1
                body = json.dumps({"keys": list(outer.keys.values())}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Keys)
        # serve_forever looks for shutdown() every poll_interval (0.5 s by default): each test's teardown waited it
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"


def _jwk(public: str, kid: str) -> dict:
    key = serialization.load_pem_public_key(public.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(key))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


@pytest.fixture
def jwks_server(rsa_keys):
    (_, public), _ = rsa_keys
    server = _JwksServer({"k1": _jwk(public, "k1")})
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def jwks_client(settings, api_broker, jwks_server):
    """The app verifying RS256 tokens with keys from a JWKS endpoint (a tiny server on loopback)."""
    rs = settings.replace(jwt_algorithm="RS256", jwt_public_key=None, jwt_jwks_url=jwks_server.url)
    yield create_app(rs, broker=api_broker).test_client()


def _kid_token(private: bytes, kid: str | None) -> str:
    headers = {"kid": kid} if kid else None
    return pyjwt.encode(_claims(), private, algorithm="RS256", headers=headers)


def test_jwks_keys_are_chosen_by_kid(jwks_client, rsa_keys):
    (private, _), _ = rsa_keys
    headers = {"Authorization": f"Bearer {_kid_token(private, 'k1')}", "Content-Type": "application/json"}
    assert jwks_client.post("/events", data=NOT_JSON_EVENT, headers=headers).status_code == 400  # authenticated


@pytest.mark.parametrize("kid", [None, "unknown"])
def test_a_token_without_a_kid_or_with_an_unknown_one_is_a_json_401(jwks_client, rsa_keys, caplog, kid):
    (private, _), _ = rsa_keys
    _assert_401_and_unlogged(jwks_client, _kid_token(private, kid), caplog)


def test_a_key_withdrawn_from_the_jwks_is_refused_once_the_key_set_expires(settings, api_broker, jwks_server, rsa_keys):
    """PyJWKClient(cache_keys=True) kept every key it had used in an lru_cache with no expiry, and
    the verified-token cache kept the token for JWT_VERIFIED_CACHE_SECONDS on top: a kid the
    provider withdrew kept working until a restart. Now the key set lives JWT_JWKS_CACHE_SECONDS
    (1 s here, with the verified-token cache at its 60 s) and a remembered token not beyond it."""
    (private, _), _ = rsa_keys
    rs = settings.replace(jwt_algorithm="RS256", jwt_public_key=None, jwt_jwks_url=jwks_server.url,
                          jwt_jwks_cache_seconds=1, jwt_verified_cache_seconds=60)  # fmt: skip
    client = create_app(rs, broker=api_broker).test_client()
    headers = {"Authorization": f"Bearer {_kid_token(private, 'k1')}", "Content-Type": "application/json"}
    assert client.post("/events", data=NOT_JSON_EVENT, headers=headers).status_code == 400  # authenticated
    (_, rotated), _ = rsa_keys
    jwks_server.keys = {"k2": _jwk(rotated, "k2")}  # the provider withdraws k1 (and publishes another)
    started = time.monotonic()
    wait_for(lambda: client.post("/events", data=NOT_JSON_EVENT, headers=headers).status_code == 401,
             timeout=10, interval=0.1, message="the withdrawn key is refused")  # fmt: skip
    assert time.monotonic() - started < 1 + 1.0  # the key set's lifespan, plus a poll's slack
    assert client.post("/events", data=NOT_JSON_EVENT, headers=headers).json["error"] == "unauthorized"


def test_a_provider_publishing_no_keys_is_a_401_not_a_500(jwks_client, jwks_server, rsa_keys, caplog):
    jwks_server.keys = {}
    (private, _), _ = rsa_keys
    _assert_401_and_unlogged(jwks_client, _kid_token(private, "k1"), caplog)


def test_the_key_set_is_not_fetched_per_request(jwks_client, jwks_server, rsa_keys):
    (private, _), _ = rsa_keys
    for claims_sub in ("a", "b", "c"):  # three tokens, so the verified-token cache does not hide fetches
        token = pyjwt.encode(_claims(sub=claims_sub), private, algorithm="RS256", headers={"kid": "k1"})
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        assert jwks_client.post("/events", data=NOT_JSON_EVENT, headers=headers).status_code == 400
    assert jwks_server.fetches == 1


def test_a_request_decodes_its_token_once(client, monkeypatch):
    """flask-jwt-extended alone decodes twice (an unverified pass for the key loader): the
    SingleDecodeJWTManager picks the key from the header and verifies once."""
    decodes = []
    original = pyjwt.api_jwt.PyJWT.decode_complete

    def counting(self, *args, **kwargs):
        decodes.append(kwargs.get("options"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pyjwt.api_jwt.PyJWT, "decode_complete", counting)
    token = _hs(sub=f"decoded-once-{uuid.uuid4().hex}")  # a token this app has not verified before
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert client.post("/events", data=NOT_JSON_EVENT, headers=headers).status_code == 400  # authenticated
    assert len(decodes) == 1


def test_an_expired_token_still_names_its_cause(client):
    now = int(time.time())
    token = _hs(iat=now - 4000, exp=now - 3600)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    response = client.post("/events", data=NOT_JSON_EVENT, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["message"] == "token has expired"


def test_an_unexpected_flask_jwt_extended_version_fails_loudly(monkeypatch):
    import flask_jwt_extended

    from app import jwt_manager

    monkeypatch.setattr(flask_jwt_extended, "__version__", "9.9.9")
    with pytest.raises(jwt_manager.JWTInternalsError, match=r"9\.9\.9"):
        jwt_manager.check_internals()


def _counting_decodes(monkeypatch) -> list:
    decodes = []
    original = pyjwt.api_jwt.PyJWT.decode_complete

    def counting(self, *args, **kwargs):
        decodes.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pyjwt.api_jwt.PyJWT, "decode_complete", counting)
    return decodes


def test_a_token_verified_once_is_not_decoded_again_by_the_same_app(client, monkeypatch):
    decodes = _counting_decodes(monkeypatch)
    headers = {
        "Authorization": f"Bearer {_hs(sub=f'verified-once-{uuid.uuid4().hex}')}",
        "Content-Type": "application/json",
    }
    for _ in range(3):
        assert client.post("/events", data=NOT_JSON_EVENT, headers=headers).status_code == 400  # authenticated
    assert len(decodes) == 1


def test_a_remembered_token_still_gets_its_roles_checked_every_time(client):
    headers = {
        "Authorization": f"Bearer {_hs(sub=f'reader-{uuid.uuid4().hex}', roles=['user'])}",
        "Content-Type": "application/json",
    }
    for _ in range(2):  # the second answer comes from the remembered claims
        response = client.post("/events", data=NOT_JSON_EVENT, headers=headers)
        assert response.status_code == 403 and response.json["error"] == "forbidden"


def test_a_token_altered_after_a_good_one_was_remembered_is_a_401(client, caplog):
    good = _hs(sub=f"device-{uuid.uuid4().hex}", roles=["user"])
    headers = {"Authorization": f"Bearer {good}", "Content-Type": "application/json"}
    assert client.post("/events", data=NOT_JSON_EVENT, headers=headers).status_code == 403
    _assert_401_and_unlogged(client, _tampered(good), caplog)  # same header and signature, new claims


def test_another_app_does_not_take_a_token_the_first_one_verified(settings, api_broker, client):
    token = _hs(sub=f"first-app-{uuid.uuid4().hex}")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert client.post("/events", data=NOT_JSON_EVENT, headers=headers).status_code == 400
    other = create_app(settings.replace(jwt_secret="another-secret-of-thirty-two-bytes!!"), broker=api_broker)
    response = other.test_client().post("/events", data=NOT_JSON_EVENT, headers=headers)
    assert response.status_code == 401


def test_with_the_cache_off_every_request_decodes(settings, api_broker, monkeypatch):
    uncached = create_app(settings.replace(jwt_verified_cache_seconds=0), broker=api_broker).test_client()
    decodes = _counting_decodes(monkeypatch)
    headers = {"Authorization": f"Bearer {_hs(sub=f'uncached-{uuid.uuid4().hex}')}", "Content-Type": "application/json"}
    for _ in range(2):
        assert uncached.post("/events", data=NOT_JSON_EVENT, headers=headers).status_code == 400
    assert len(decodes) == 2
