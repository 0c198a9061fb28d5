"""Authentication, roles and request validation, through the Flask test client."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

EVENT = {"device_id": "device-123", "payload": {"status": "online", "temp_c": 37.2}}


def _alg_none_token() -> str:
    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': 'x', 'roles': ['admin'], 'exp': 4102444800})}."


CASES: dict[str, tuple[Any, int]] = {
    "no token": (None, 401),
    "garbage": ("not-a-jwt", 401),
    "alg none": ("ALG_NONE", 401),
    "wrong key": ({"key": "another-secret-that-is-long-enough"}, 401),
    "expired": ({"expires_in": -60}, 401),
    "no roles": ({"roles": []}, 403),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method, path", [("post", "/events"), ("get", "/resource/device-123")])
def test_authentication_failures_are_json_401_and_missing_roles_403(client, make_token, case, method, path):
    spec, status = CASES[case]
    headers = {}
    if spec == "ALG_NONE":
        headers["Authorization"] = f"Bearer {_alg_none_token()}"
    elif isinstance(spec, str):
        headers["Authorization"] = f"Bearer {spec}"
    elif isinstance(spec, dict):
        headers["Authorization"] = f"Bearer {make_token(**spec)}"
    response = getattr(client, method)(path, json=EVENT if method == "post" else None, headers=headers)
    assert response.status_code == status
    assert response.is_json and set(response.json) >= {"error", "message"}


@pytest.mark.parametrize(
    "roles, post_status, get_status",
    [
        (["device"], 202, 404),
        (["admin"], 202, 404),
        (["user"], 403, 404),
        (["analyst"], 403, 403),
    ],
)
def test_roles_are_enforced_per_endpoint(client, make_token, roles, post_status, get_status, device_id):
    headers = {"Authorization": f"Bearer {make_token(roles=roles)}"}
    assert client.post("/events", json={**EVENT, "device_id": device_id}, headers=headers).status_code == post_status
    assert client.get(f"/resource/{device_id}-absent", headers=headers).status_code == get_status


@pytest.mark.parametrize(
    "body, content_type, status, field",
    [
        ("not json", "application/json", 400, None),
        ('{"device_id": "d"}', "text/plain", 415, None),
        ("[1, 2]", "application/json", 422, None),
        ('{"payload": {}}', "application/json", 422, "device_id"),
        ('{"device_id": "d"}', "application/json", 422, "payload"),
        ('{"device_id": "", "payload": {}}', "application/json", 422, "device_id"),
        ('{"device_id": "has space", "payload": {}}', "application/json", 422, "device_id"),
        ('{"device_id": "' + "x" * 129 + '", "payload": {}}', "application/json", 422, "device_id"),
        ('{"device_id": 7, "payload": {}}', "application/json", 422, "device_id"),
        ('{"device_id": "dev-1\\n", "payload": {}}', "application/json", 422, "device_id"),  # "$" let it by
        ("[" * 30_000 + "]" * 30_000, "application/json", 400, None),  # RecursionError in the parser: was a 500
        ('{"device_id": "d", "payload": [1]}', "application/json", 422, "payload"),
        ('{"device_id": "d", "payload": {}, "extra": 1}', "application/json", 422, "extra"),
        # what PostgreSQL's jsonb can never store: 422 now, not 202 and then a dead letter
        ('{"device_id": "d", "payload": {"s": "a\\u0000b"}}', "application/json", 422, "payload"),
        ('{"device_id": "d", "payload": {"a\\u0000": 1}}', "application/json", 422, "payload"),
        ('{"device_id": "d", "payload": {"s": "\\ud800"}}', "application/json", 422, "payload"),
        ('{"device_id": "d", "payload": {"t": NaN}}', "application/json", 422, "payload"),
        ('{"device_id": "d", "payload": {"t": [-Infinity]}}', "application/json", 422, "payload"),
        ('{"device_id": "d", "payload": ' + '{"a": ' * 33 + "1" + "}" * 33 + "}", "application/json", 422, "payload"),
        (
            '{"device_id": "d", "payload": {' + ",".join(f'"k{i}": 0' for i in range(1001)) + "}}",
            "application/json",
            422,
            "payload",
        ),
    ],
)
def test_bad_bodies_get_clear_errors(client, auth, body, content_type, status, field):
    response = client.post("/events", data=body, headers={**auth, "Content-Type": content_type})
    assert response.status_code == status, response.json
    assert response.is_json and response.json["error"] and response.json["message"]
    if field:
        assert field in response.json["fields"]


def test_bodies_over_the_limit_get_413(client, auth, settings):
    big = json.dumps({"device_id": "d", "payload": {"blob": "x" * settings.max_body_bytes}})
    response = client.post("/events", data=big, headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.is_json and response.json["error"]


@pytest.mark.stack  # the 404 is PostgreSQL's answer
def test_invalid_resource_ids_get_400_and_unknown_ones_404(client, auth):
    assert client.get("/resource/bad%20id", headers=auth).status_code == 400
    assert client.get("/resource/dev-1%0A", headers=auth).status_code == 400  # a trailing newline is no id
    missing = client.get("/resource/never-seen-device", headers=auth)
    assert missing.status_code == 404 and missing.json["error"] == "not_found"


def test_unknown_routes_and_methods_are_json(client):
    assert client.get("/nope").json["error"] == "not_found"
    assert client.put("/events").status_code == 405 and client.put("/events").is_json


@pytest.mark.parametrize("roles, status", [(None, 401), (["device", "user"], 403), (["admin"], 200)])
def test_metrics_are_for_admins_only(client, make_token, roles, status):
    headers = {"Authorization": f"Bearer {make_token(roles=roles)}"} if roles else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == status
    if status == 200:
        assert b"http_requests_total" in response.data


WRONG_SHAPES = {
    "devices a string (user)": {"roles": ["user"], "devices": "dev-1"},
    "devices a string (device)": {"roles": ["device"], "devices": "dev-1"},
    "devices holding a number": {"roles": ["device"], "devices": ["dev-1", 7]},
    "devices null": {"roles": ["user"], "devices": None},
    "device_id a list": {"roles": ["device"], "device_id": ["dev-1"]},
    "device_id a number": {"roles": ["device"], "device_id": 1},
    "roles nested": {"roles": [["admin"]]},
    "roles an object": {"roles": {"admin": True}},
    "roles a string": {"roles": "admin"},
    "roles null": {"roles": None},
    "sub too long": {"sub": "s" * 257},
    "sub with a NUL": {"sub": "dev\x00ice"},
    "sub with a lone surrogate": {"sub": "dev\ud800ice"},
}


def _encode(claims: dict) -> str:
    """A token whose claims may hold what PyJWT's encoder refuses (a lone surrogate: raw JSON)."""
    import hashlib
    import hmac
    import time

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = {"sub": "device-tester", "exp": int(time.time()) + 600, **claims}
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(body).encode())}"
    signature = hmac.new(b"local-dev-secret", signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.mark.parametrize("case", WRONG_SHAPES)
@pytest.mark.parametrize("method, path", [("post", "/events"), ("get", "/resource/dev-2")])
def test_claims_of_the_wrong_shape_are_a_json_401_never_a_wider_scope_or_a_500(client, case, method, path):
    """Before, ``"devices": "dev-1"`` on a user token lifted its limit (any id could be read) and
    ``roles: [["admin"]]`` was a 500 on every route."""
    headers = {"Authorization": f"Bearer {_encode(WRONG_SHAPES[case])}"}
    response = getattr(client, method)(path, json=EVENT if method == "post" else None, headers=headers)
    assert response.status_code == 401, response.json
    assert response.is_json and response.json["error"] == "unauthorized"
