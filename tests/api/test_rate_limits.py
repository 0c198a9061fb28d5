"""Rate limits on POST /events: per device and per token subject, 429 + Retry-After + JSON, and
open (not closed) when Redis is unreachable (issue 9, item 5)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app import create_app
from app.services import services

pytestmark = pytest.mark.stack


@pytest.fixture
def limited(settings, api_broker):
    def make(limit: str, **changes):
        return create_app(settings.replace(rate_limit_events=limit, **changes), broker=api_broker).test_client()

    return make


def _post(client, token, device):
    return client.post(
        "/events", json={"device_id": device, "payload": {}}, headers={"Authorization": f"Bearer {token}"}
    )


def test_a_device_posting_too_fast_gets_429_with_retry_after(limited, make_token, device_id, unique):
    client, token = limited("3/10 seconds"), make_token(roles=("device",), sub=f"sub-{unique}")
    assert [_post(client, token, device_id).status_code for _ in range(3)] == [202, 202, 202]
    refused = _post(client, token, device_id)
    assert refused.status_code == 429 and refused.is_json
    assert refused.json["error"] == "too_many_requests" and "device" in refused.json["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 10


def test_one_subject_posting_for_many_devices_is_limited_too(limited, make_token, device_id, unique):
    client, token = limited("3/10 seconds"), make_token(roles=("admin",), sub=f"gateway-{unique}")
    statuses = [_post(client, token, f"{device_id}-{i}").status_code for i in range(4)]
    assert statuses == [202, 202, 202, 429]


def test_a_request_refused_for_its_subject_uses_up_none_of_its_devices_allowance(
    limited, make_token, device_id, unique
):
    """Both scopes are checked in one script, all or nothing."""
    client = limited("3/10 seconds")
    gateway = make_token(roles=("admin",), sub=f"gateway-{unique}")
    assert [_post(client, gateway, f"{device_id}-{i}").status_code for i in range(3)] == [202, 202, 202]
    assert _post(client, gateway, device_id).status_code == 429  # the gateway's limit, not the device's
    device = make_token(roles=("device",), sub=f"sub-{unique}")
    assert [_post(client, device, device_id).status_code for _ in range(4)] == [202, 202, 202, 429]


def test_every_configured_limit_applies(limited, make_token, device_id, unique):
    client, token = limited("5/10 seconds;2/10 seconds"), make_token(roles=("device",), sub=f"sub-{unique}")
    refused = [_post(client, token, device_id) for _ in range(3)][-1]
    assert refused.status_code == 429 and "2 per 10 second" in refused.json["message"]


def test_with_redis_unreachable_the_limit_fails_open(limited, make_token, device_id, unique):
    client = limited("1/10 seconds", redis_url="redis://127.0.0.1:1/0")
    token = make_token(roles=("device",), sub=f"sub-{unique}")
    assert [_post(client, token, device_id).status_code for _ in range(3)] == [202, 202, 202]


def test_an_error_that_is_not_redis_s_own_does_not_open_the_breaker(limited, make_token, device_id, unique):
    """Before, any exception in the check (here a bug of ours, a ValueError) opened the Redis
    breaker, and the limits and idempotency keys of the whole process were off for 5 s."""
    client = limited("3/10 seconds")
    app = client.application

    def broken(**kwargs):
        raise ValueError("a bug of ours")

    services(app).rate_limits = replace(services(app).rate_limits, acquire_all=broken)
    assert _post(client, make_token(roles=("device",), sub=f"sub-{unique}"), device_id).status_code == 500
    assert services(app).redis_available()
