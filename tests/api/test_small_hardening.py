"""The smaller holes of issue 20 (item 8): /readyz cached, SQL parameters hidden, HSTS on HTTPS,
audit lines naming the request and the client, and refused requests rate-limited too."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text

from app import create_app
from app.services import services


def test_readyz_runs_its_checks_at_most_once_a_second(client, app, monkeypatch):
    """/readyz is unauthenticated and never shed: each request took a PostgreSQL connection."""
    from app import health

    ran = []
    monkeypatch.setattr(health, "_run_checks", lambda: ran.append(1) or {"postgres": "ok"})
    services(app).readiness.checked = None  # no round of checks from an earlier test
    assert all(client.get("/readyz").status_code == 200 for _ in range(50))
    assert len(ran) == 1
    monkeypatch.setattr(health, "READY_CACHE_SECONDS", 0.0)  # the second has passed
    client.get("/readyz")
    assert len(ran) == 2


def test_https_responses_carry_hsts_and_plain_http_ones_do_not(client):
    assert client.get("/healthz").headers.get("Strict-Transport-Security") is None
    secure = client.get("/healthz", base_url="https://api.example")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=31536000")


@pytest.mark.stack  # the sign-in's throttle counts in Redis
def test_behind_a_load_balancer_the_forwarded_scheme_and_address_count(settings, api_broker, caplog):
    app = create_app(settings.replace(proxy_hops=1), broker=api_broker)
    client = app.test_client()
    forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    assert client.get("/healthz", headers=forwarded).headers["Strict-Transport-Security"]
    page = client.get("/admin/login", headers=forwarded)
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    with caplog.at_level(logging.INFO, logger="app.admin.audit"):
        client.post("/admin/login", data={"csrf": csrf, "token": "x"}, headers=forwarded)
    [line] = [r for r in caplog.records if r.getMessage() == "admin sign-in refused"]
    assert line.client == "203.0.113.9"


@pytest.mark.stack
def test_sql_parameters_never_reach_an_exception_message(settings):
    """A payload in a failing statement was copied into the error by SQLAlchemy ("[parameters:
    ...]"), and so into logs, a dead letter's exception.message and the console. (PostgreSQL's own
    message may still quote a value it could not parse; that is the server's text, not ours.)"""
    from core.db import make_engine

    engine = make_engine(settings, pool_size=1)
    try:
        with pytest.raises(Exception) as caught, engine.connect() as conn:
            conn.execute(text("SELECT 1 / 0, CAST(:v AS text)"), {"v": "secret-payload-7431"})
        assert "secret-payload-7431" not in str(caught.value)
    finally:
        engine.dispose()


@pytest.mark.stack
def test_refused_requests_are_rate_limited_per_client_address(settings, api_broker, unique):
    app = create_app(settings.replace(rate_limit_refused="3/10 seconds"), broker=api_broker)
    mine, other = app.test_client(), app.test_client()
    mine.environ_base["REMOTE_ADDR"] = f"10.{int(unique[:2], 16)}.{int(unique[2:4], 16)}.7"
    other.environ_base["REMOTE_ADDR"] = f"10.{int(unique[:2], 16)}.{int(unique[2:4], 16)}.8"
    bad = {"Authorization": "Bearer not-a-token"}
    statuses = [mine.get("/resource/x", headers=bad).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    refused = mine.post("/events", data="x", headers=bad)
    assert refused.status_code == 429 and refused.is_json and 1 <= int(refused.headers["Retry-After"]) <= 10
    assert refused.headers["X-Request-ID"]  # logged and counted as the 429 it is
    assert other.get("/resource/x", headers=bad).status_code == 401
    assert mine.get("/healthz").status_code == 200  # what is not refused is not limited


@pytest.mark.stack
def test_audit_lines_name_the_request_and_the_client(client, caplog):
    client.get("/admin/login")
    with caplog.at_level(logging.INFO, logger="app.admin.audit"):
        from tests.api.test_admin_console import sign_in

        response = sign_in(client, "not-a-token")
    assert response.status_code == 401
    [line] = [r for r in caplog.records if r.getMessage() == "admin sign-in refused"]
    assert line.request_id == response.headers["X-Request-ID"] and line.client == "127.0.0.1"
