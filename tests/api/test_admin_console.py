"""The /admin console through the Flask test client on the real stack (issue 13, item 1):
sign-in, session cookie, CSRF, the admin role, every page, and replay with its confirmation.
The browser run (headless Chromium) is tests/test_console_browser.py."""

from __future__ import annotations

import html
import re
import time

import pytest
from kafka import KafkaConsumer

from broker.brokers.kafka import client_options
from tests.helpers import wait_for

pytestmark = pytest.mark.stack


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def sign_in(client, token):
    page = client.get("/admin/login")
    return client.post("/admin/login", data={"csrf": csrf_of(page.text), "token": token})


@pytest.fixture
def admin(client, make_token):
    """A signed-in test client; returns the session's CSRF token."""
    response = sign_in(client, make_token(roles=("admin",), sub="ops-alice"))
    assert response.status_code == 302
    return csrf_of(client.get("/admin/").text)


def test_pages_need_a_session_and_send_you_to_sign_in(client):
    for path in ("/admin/", "/admin/group", "/admin/dead-letters", "/admin/actors", "/admin/dead-letters/0/0"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].endswith("/admin/login")
    assert client.post("/admin/dead-letters/action", data={"action": "purge", "confirm": "yes"}).status_code == 302


def test_an_admin_token_becomes_a_strict_httponly_session_cookie(client, make_token):
    response = sign_in(client, make_token(roles=("admin",), expires_in=3600))
    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/")
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("admin_session=")]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    assert int(re.search(r"Max-Age=(\d+)", cookie).group(1)) == 900  # ADMIN_SESSION_SECONDS
    page = client.get("/admin/")
    assert page.status_code == 200 and "Overview" in page.text


def test_a_session_never_outlives_its_token(client, make_token):
    response = sign_in(client, make_token(roles=("admin",), expires_in=120))
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("admin_session=")]
    assert int(re.search(r"Max-Age=(\d+)", cookie).group(1)) <= 120


@pytest.mark.parametrize(
    ("roles", "expires_in", "status"),
    [(("user", "device"), 3600, 403), (("admin",), -60, 401)],
    ids=["not an admin", "expired"],
)
def test_other_tokens_get_no_session(client, make_token, roles, expires_in, status):
    response = sign_in(client, make_token(roles=roles, expires_in=expires_in))
    assert response.status_code == status
    assert not any(c.startswith("admin_session=") for c in response.headers.getlist("Set-Cookie"))
    assert client.get("/admin/").status_code == 302


def test_garbage_and_alg_none_tokens_get_no_session(client):
    for token in ("not-a-token", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4Iiwicm9sZXMiOlsiYWRtaW4iXX0."):
        assert sign_in(client, token).status_code == 401


def test_the_sign_in_form_and_every_action_need_their_csrf_token(client, make_token, admin):
    client.get("/admin/login")
    assert client.post("/admin/login", data={"token": make_token(roles=("admin",))}).status_code == 403
    for data in ({"action": "purge", "confirm": "yes"}, {"action": "purge", "confirm": "yes", "csrf": "wrong"}):
        assert client.post("/admin/dead-letters/action", data=data).status_code == 403
    assert client.post("/admin/logout").status_code == 403
    assert client.post("/admin/dead-letters/action", data={"action": "purge", "csrf": admin}).status_code == 200


def test_sign_out_ends_the_session(client, admin):
    assert client.post("/admin/logout", data={"csrf": admin}).status_code == 302
    assert client.get("/admin/").status_code == 302


def test_every_page_renders_with_a_strict_policy_and_no_script(client, admin):
    for path in ("/admin/", "/admin/group", "/admin/dead-letters", "/admin/actors"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert response.headers["Cache-Control"] == "no-store"
        assert "<script" not in response.text and "http://" not in response.text and "https://" not in response.text
    assert "process_event" in client.get("/admin/actors").text
    assert client.get("/admin/static/admin.css").status_code == 200


def test_a_dead_letter_is_shown_and_replayed_after_a_confirmation(client, admin, app, make_topic, settings, caplog):
    from broker import Message
    from broker.broker import dead_letter_headers
    from broker.consumer import Record

    origin = make_topic(partitions=1)
    broker = app.extensions["device_backend"].clients.broker
    message = Message(
        actor_name="process_event", topic=origin, args=({"device_id": "x"},), headers={"request_id": "r-1"}
    )
    record = Record(origin, 0, 7, b"x", message.encode(), [], int(time.time() * 1000))
    headers = dead_letter_headers(record, ValueError("the payload was odd"), message=message, attempts=4, host="h")
    broker._produce(settings.kafka_topic_dlq, b"x", message.encode(), headers)(10)  # as a worker dead-letters
    listing = client.get("/admin/dead-letters?actor=process_event&error=ValueError")
    assert message.message_id in listing.text and "r-1" in listing.text
    position = re.search(rf'value="(\d+:\d+)" aria-label="select {message.message_id}"', listing.text).group(1)
    partition, offset = position.split(":")

    detail = html.unescape(client.get(f"/admin/dead-letters/{partition}/{offset}").text)
    assert "ValueError: the payload was odd" in detail and '"device_id": "x"' in detail

    replay = {"csrf": admin, "action": "replay-selected", "selected": position}
    confirm = client.post("/admin/dead-letters/action", data=replay)
    assert 'Replay <b id="confirm-count">1</b>' in confirm.text  # nothing sent yet
    with caplog.at_level("INFO", logger="app.admin.audit"):
        done = client.post("/admin/dead-letters/action", data={**replay, "confirm": "yes"})
    assert "Replayed 1 dead letter(s)" in done.text
    [line] = [r for r in caplog.records if getattr(r, "action", None) == "replayed dead letters"]
    assert line.admin == "ops-alice" and line.count == 1

    consumer = KafkaConsumer(origin, **client_options(settings.kafka_bootstrap_servers), auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)  # fmt: skip
    replayed = [r for r in consumer]
    consumer.close()
    assert [r.value for r in replayed] == [message.encode()]
    wait_for(lambda: "replayed" in client.get(f"/admin/dead-letters/{partition}/{offset}").text, timeout=5)


def test_a_redis_outage_is_a_503_page_not_a_crash(client, app, monkeypatch):
    import redis

    def refuse(*args, **kwargs):
        raise redis.ConnectionError("Redis is away")

    monkeypatch.setattr(app.extensions["device_backend"].clients.redis, "get", refuse)
    client.set_cookie("admin_session", "some-session", path="/admin")
    response = client.get("/admin/")
    assert response.status_code == 503 and "Redis did not answer" in response.text


def test_the_sign_in_form_is_capped_in_size(client):
    page = client.get("/admin/login")
    response = client.post("/admin/login", data={"csrf": csrf_of(page.text), "token": "x" * 20_000})
    assert response.status_code == 413 and response.is_json
