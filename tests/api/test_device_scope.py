"""Device scope: a device's credential acts for that device only (issue 9, item 1)."""

from __future__ import annotations

import pytest

from app import create_app

DENIED = {
    "another device's event": (("device",), {"device_id": "d1"}, "post", "d2"),
    "another device's resource": (("device",), {"devices": ["d1", "d2"]}, "get", "d3"),
    "the user role does not widen a device token": (("device", "user"), {"device_id": "d1"}, "get", "d2"),
    "a user token limited by a devices claim": (("user",), {"devices": ["d1"]}, "get", "d2"),
}


@pytest.mark.parametrize("case", DENIED)
def test_acting_outside_the_device_scope_is_a_json_403(client, make_token, case):
    roles, claims, method, device = DENIED[case]
    headers = {"Authorization": f"Bearer {make_token(roles=roles, **claims)}"}
    if method == "post":
        response = client.post("/events", json={"device_id": device, "payload": {}}, headers=headers)
    else:
        response = client.get(f"/resource/{device}", headers=headers)
    assert response.status_code == 403, response.json
    assert response.json["error"] == "forbidden" and device in response.json["message"]


@pytest.fixture
def production_client(settings, api_broker):
    return create_app(settings.replace(app_env="production"), broker=api_broker).test_client()


def test_in_production_a_device_token_without_a_scope_claim_is_refused(production_client, make_token):
    headers = {"Authorization": f"Bearer {make_token(roles=('device', 'user'))}"}
    posted = production_client.post("/events", json={"device_id": "device-123", "payload": {}}, headers=headers)
    read = production_client.get("/resource/device-123", headers=headers)
    for response in (posted, read):
        assert response.status_code == 403 and "must name its device" in response.json["message"]


@pytest.mark.stack
@pytest.mark.parametrize(
    "roles, claims, reads_other",
    [
        (("device",), {"device_id": "SELF"}, False),
        (("device", "user"), {"devices": ["SELF", "x"]}, False),
        (("admin",), {}, True),
        (("device",), {}, True),  # development: the walk-through's unscoped token
    ],
)
def test_within_its_scope_a_token_posts_and_reads(client, make_token, device_id, roles, claims, reads_other):
    claims = {k: [device_id if d == "SELF" else d for d in v] if isinstance(v, list) else device_id
              for k, v in claims.items()}  # fmt: skip
    headers = {"Authorization": f"Bearer {make_token(roles=roles, **claims)}"}
    assert client.post("/events", json={"device_id": device_id, "payload": {}}, headers=headers).status_code == 202
    assert client.get(f"/resource/{device_id}", headers=headers).status_code != 403
    assert (client.get(f"/resource/{device_id}-other", headers=headers).status_code != 403) is reads_other


@pytest.mark.stack
def test_a_user_token_without_a_devices_claim_reads_any_device(client, make_token, device_id):
    headers = {"Authorization": f"Bearer {make_token(roles=('user',))}"}
    assert client.get(f"/resource/{device_id}", headers=headers).status_code == 404
