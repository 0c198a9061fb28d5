"""The /admin console through the Flask test client on the real stack (issue 13, item 1):
sign-in, session cookie, CSRF, the admin role, every page, and replay with its confirmation.
The browser run (headless Chromium) is tests/test_console_browser.py."""

from __future__ import annotations

import html
import re
import time

import pytest
from kafka import KafkaConsumer

from app.services import services
from broker.brokers.kafka import client_options
from tests.helpers import wait_for

pytestmark = pytest.mark.stack


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match is not None, "no CSRF field on the page"
    return match.group(1)


def sign_in(client, token):
    page = client.get("/admin/login")
    return client.post("/admin/login", data={"csrf": csrf_of(page.text), "token": token})


@pytest.fixture
def declare_topic(unique):
    """Declare a test actor reading ``topic`` on a broker, and remove it after the test."""
    from broker import actor

    declared = []

    def declare(broker, topic):
        name = f"console_target_{unique}_{len(declared)}"
        actor(actor_name=name, topic=topic, broker=broker)(lambda *args: None)
        declared.append((broker, name))

    yield declare
    for broker, name in declared:
        broker.actors.pop(name, None)


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


def test_a_dead_letter_is_shown_and_replayed_after_a_confirmation(
    client, admin, app, make_topic, settings, caplog, declare_topic
):
    from broker import Message
    from broker.consumer import Record
    from broker.dead_letters import dead_letter_headers

    origin = make_topic(partitions=1)
    broker = services(app).clients.broker
    declare_topic(broker, origin)  # replay writes only to topics a declared actor reads
    message = Message(
        actor_name="process_event", topic=origin, args=({"device_id": "x"},), headers={"request_id": "r-1"}
    )
    record = Record(origin, 0, 7, b"x", message.encode(), [], int(time.time() * 1000))
    headers = dead_letter_headers(record, ValueError("the payload was odd"), message=message, attempts=4, host="h")
    broker.produce(settings.kafka_topic_dlq, b"x", message.encode(), headers)(10)  # as a worker dead-letters
    listing = client.get("/admin/dead-letters?actor=process_event&error=ValueError")
    assert message.message_id in listing.text and "r-1" in listing.text
    position = re.search(rf'value="(\d+:\d+)" aria-label="select {message.message_id}"', listing.text).group(1)
    partition, offset = position.split(":")

    detail = html.unescape(client.get(f"/admin/dead-letters/{partition}/{offset}").text)
    assert "ValueError: the payload was odd" in detail and '"device_id": "x"' in detail

    replay = {"csrf": admin, "action": "replay-selected", "selected": position}
    confirm = client.post("/admin/dead-letters/action", data=replay)
    assert 'Replay <b id="confirm-count">1</b>' in confirm.text  # nothing sent yet
    assert f"<td>{origin}</td><td>1</td>" in confirm.text  # where it will go
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

    monkeypatch.setattr(services(app).clients.redis, "get", refuse)
    client.set_cookie("admin_session", "some-session", path="/admin")
    response = client.get("/admin/")
    assert response.status_code == 503 and "Redis did not answer" in response.text


def test_the_sign_in_form_is_capped_in_size(client):
    page = client.get("/admin/login")
    response = client.post("/admin/login", data={"csrf": csrf_of(page.text), "token": "x" * 20_000})
    assert response.status_code == 413 and response.is_json


def _dead_letter(client, app, settings, origin) -> str:
    """Write a dead letter of process_event from ``origin`` as a worker would; its position."""
    from broker import Message
    from broker.consumer import Record
    from broker.dead_letters import dead_letter_headers

    broker = services(app).clients.broker
    message = Message(actor_name="process_event", topic=origin, args=({"device_id": "x"},), headers={})
    record = Record(origin, 0, 7, b"x", message.encode(), [], int(time.time() * 1000))
    headers = dead_letter_headers(record, ValueError("odd"), message=message, attempts=1, host="h")
    broker.produce(settings.kafka_topic_dlq, b"x", message.encode(), headers)(10)
    listing = client.get("/admin/dead-letters?actor=process_event").text
    match = re.search(rf'value="(\d+:\d+)" aria-label="select {message.message_id}"', listing)
    assert match is not None, f"{message.message_id} is not listed"
    return match.group(1)


def test_replay_goes_only_to_declared_actor_topics_and_the_confirmation_names_them(
    client, admin, app, make_topic, settings, declare_topic
):
    declared, undeclared = make_topic(partitions=1), make_topic(partitions=1)
    declare_topic(services(app).clients.broker, declared)
    positions = [_dead_letter(client, app, settings, declared), _dead_letter(client, app, settings, undeclared)]
    form = {"csrf": admin, "action": "replay-selected", "selected": positions}
    confirm = client.post("/admin/dead-letters/action", data=form)
    assert f"<td>{declared}</td><td>1</td>" in confirm.text and undeclared not in confirm.text
    assert 'id="refused">1 will not be replayed' in confirm.text
    done = client.post("/admin/dead-letters/action", data={**form, "confirm": "yes"})
    assert "Replayed 1 dead letter(s)" in done.text and "1 were not replayed" in done.text
    consumer = KafkaConsumer(undeclared, **client_options(settings.kafka_bootstrap_servers),
                             auto_offset_reset="earliest", consumer_timeout_ms=2000)  # fmt: skip
    assert list(consumer) == []  # nothing written where no declared actor reads
    consumer.close()


def test_a_header_cannot_spoof_a_dead_letters_position():
    from broker import Message
    from broker.consumer import Record
    from broker.dead_letters import describe_dead_letter

    value = Message(actor_name="a", topic="t", args=(), headers={}).encode()
    headers = [("dlq.dlq_partition", b"9"), ("dlq.dlq_offset", b"99"), ("dlq.key", b"spoofed")]
    summary = describe_dead_letter(Record("events-dlq", 1, 5, b"k", value, headers, 0))
    assert (summary["dlq_partition"], summary["dlq_offset"], summary["key"]) == (1, 5, "k")


BAD_POSITIONS = ["\u00b2:1", "1:\u00b2", "1:" + "9" * 5000, "9" * 11 + ":1", "-1:1", "1:2:3", "", "1"]


@pytest.mark.parametrize("position", BAD_POSITIONS, ids=["superscript", "superscript offset", "5000 digits",
                                                           "partition overflow", "negative", "three parts",
                                                           "empty", "no colon"])  # fmt: skip
def test_a_malformed_position_is_a_400_not_a_500(client, admin, position):
    form = {"csrf": admin, "action": "replay-selected", "selected": position}
    assert client.post("/admin/dead-letters/action", data=form).status_code == 400


def test_too_many_positions_are_a_400(client, admin):
    form = {"csrf": admin, "action": "replay-selected", "selected": [f"0:{i}" for i in range(501)]}
    assert client.post("/admin/dead-letters/action", data=form).status_code == 400


def test_odd_inputs_to_the_pages_are_never_a_500(client, admin):
    assert client.get("/admin/dead-letters/0/" + "9" * 30).status_code == 404
    assert client.get("/admin/dead-letters/" + "9" * 12 + "/0").status_code == 404
    for since in ("nan", "inf", "-5", "1e400", "\u00b2"):
        assert client.get(f"/admin/dead-letters?since_hours={since}").status_code == 200
    non_ascii = {"csrf": "\u00e9t\u00e9", "action": "purge", "confirm": "yes"}
    assert client.post("/admin/dead-letters/action", data=non_ascii).status_code == 403
    client.get("/admin/login")
    assert client.post("/admin/login", data={"csrf": "\u00e9", "token": "x"}).status_code == 403


def _token(**claims) -> str:
    import jwt as pyjwt

    body = {"sub": "ops-bob", "exp": int(time.time()) + 600, **claims}
    return pyjwt.encode(body, "local-dev-secret", algorithm="HS256")


@pytest.mark.parametrize(
    "claims",
    [
        {"roles": ["admin"], "type": "refresh"},  # a refresh token: refused as the API refuses it
        {"roles": [["admin"]]},  # malformed roles: was a 500
        {"roles": "admin"},
    ],
    ids=["refresh token", "nested roles", "roles a string"],
)
def test_only_well_formed_access_tokens_sign_in(client, claims):
    token = _token(**claims)
    assert sign_in(client, token).status_code == 401
    api = client.post("/events", data="x", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 401  # the API refuses the same tokens the same way
    assert client.get("/admin/").status_code == 302


def test_a_token_that_expired_inside_the_leeway_is_a_401_not_a_500(client):
    """PyJWT accepts it (30 s leeway), but a session cannot end before it starts."""
    assert sign_in(client, _token(roles=["admin"], exp=int(time.time()) - 5)).status_code == 401
    assert client.get("/admin/").status_code == 302


def test_sign_in_is_throttled_per_client_address(settings, api_broker, make_token, unique):
    from app import create_app

    app = create_app(settings.replace(admin_sign_in_per_minute=3), broker=api_broker)
    mine, other = app.test_client(), app.test_client()
    mine.environ_base["REMOTE_ADDR"] = f"10.{int(unique[:2], 16)}.{int(unique[2:4], 16)}.1"
    other.environ_base["REMOTE_ADDR"] = f"10.{int(unique[:2], 16)}.{int(unique[2:4], 16)}.2"
    statuses = [sign_in(mine, "not-a-token").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    refused = sign_in(mine, make_token(roles=("admin",)))  # even a good token, until the minute is over
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert sign_in(other, make_token(roles=("admin",))).status_code == 302


def test_a_new_sign_in_ends_the_subjects_previous_session(app, make_token, unique):
    first, second = app.test_client(), app.test_client()
    assert sign_in(first, make_token(roles=("admin",), sub=f"ops-{unique}")).status_code == 302
    assert first.get("/admin/").status_code == 200
    assert sign_in(second, make_token(roles=("admin",), sub=f"ops-{unique}")).status_code == 302
    assert first.get("/admin/").status_code == 302  # signed out by the newer sign-in
    assert second.get("/admin/").status_code == 200


def test_the_dead_letter_list_reads_one_page_at_a_time(client, admin, app, settings, monkeypatch):
    from broker import admin as kafka_admin

    asked = []
    real = kafka_admin.recent_dead_letters

    def recording(options, topic, **kwargs):
        asked.append(kwargs)
        return real(options, topic, **kwargs)

    monkeypatch.setattr(kafka_admin, "recent_dead_letters", recording)
    assert client.get("/admin/dead-letters").status_code == 200
    page = client.get("/admin/dead-letters?page=2")
    assert page.status_code == 200 and 'id="older"' in page.text and "Page 3" in page.text
    assert asked == [{"per_partition": 100, "skip": 0}, {"per_partition": 100, "skip": 200}]
    assert client.get("/admin/dead-letters?page=" + "9" * 5000).status_code == 200  # page 0, not a 500
