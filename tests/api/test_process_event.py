"""The process_event task against real PostgreSQL and Redis: idempotence, newest-wins, cache coherence."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid

import pytest
from sqlalchemy import text

from broker import Call
from core.cache import cache_key, fence_key
from core.resources import get_resource
from tasks import process_event
from tests.helpers import wait_for

pytestmark = pytest.mark.stack


def make_event(device_id: str, at: dt.datetime, **payload) -> dict:
    return {
        "request_id": str(uuid.uuid4()),
        "device_id": device_id,
        "user_id": "device-tester",
        "received_at": at.isoformat(),
        "payload": payload,
    }


T0 = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def test_duplicate_and_out_of_order_deliveries_leave_the_newest_state(task_runtime, device_id, db_engine, redis_client):
    older = make_event(device_id, T0, temp_c=20.0)
    newer = make_event(device_id, T0 + dt.timedelta(seconds=5), temp_c=25.0)
    for event in (newer, older, newer, older):  # out of order, each delivered twice
        process_event(event)
    record = get_resource(db_engine, device_id)
    assert record.payload == {"temp_c": 25.0}
    assert record.version == 1  # only the first delivery of `newer` changed anything
    with db_engine.connect() as conn:
        rows = conn.execute(
            text("SELECT request_id, applied FROM events WHERE device_id = :d ORDER BY received_at"), {"d": device_id}
        ).all()
    assert [(str(r.request_id), r.applied) for r in rows] == [(older["request_id"], False), (newer["request_id"], True)]
    assert redis_client.get(cache_key(device_id)) is None
    assert int(redis_client.get(fence_key(device_id))) == 1


def test_each_newer_event_bumps_the_version_and_invalidates_the_cache(task_runtime, device_id, redis_client, db_engine):
    for i in range(3):
        process_event(make_event(device_id, T0 + dt.timedelta(seconds=i), n=i))
        assert redis_client.get(cache_key(device_id)) is None, "the entry must be gone after a write"
        assert int(redis_client.get(fence_key(device_id))) == i + 1
        assert task_runtime.resource_cache.fill(get_resource(db_engine, device_id)) is True  # the next reader refills
        cached = json.loads(redis_client.get(cache_key(device_id)))
        assert (cached["version"], cached["payload"]) == (i + 1, {"n": i})
        assert 0 < redis_client.ttl(cache_key(device_id)) <= 60


def test_a_reader_that_loaded_the_old_row_cannot_cache_it_after_the_write(task_runtime, device_id, db_engine,
                                                                          redis_client):  # fmt: skip
    """The race that delete-on-write loses, replayed step by step, many times: the reader reads
    version v from PostgreSQL, the worker commits v+1 and invalidates, then the reader caches
    what it read. The versioned fill must refuse; a plain SET (the control) does not."""
    cache = task_runtime.resource_cache
    process_event(make_event(device_id, T0, n=0))
    for i in range(1, 101):
        redis_client.delete(cache_key(device_id))  # the entry expired: the next read is a miss
        stale = get_resource(db_engine, device_id)  # reader: a miss, reads version i from PostgreSQL
        process_event(make_event(device_id, T0 + dt.timedelta(seconds=i), n=i))  # worker: commit + invalidate
        assert cache.fill(stale) is False  # reader: tries to cache what it read
        assert redis_client.get(cache_key(device_id)) is None
        fresh = get_resource(db_engine, device_id)
        assert fresh.version == stale.version + 1 == i + 1
        assert cache.fill(fresh) is True  # a reader after the write caches the new version

    # control: the same interleaving with a naive write leaves the stale version behind
    redis_client.set(cache_key(device_id), json.dumps(stale.to_json()))
    assert json.loads(redis_client.get(cache_key(device_id)))["version"] < get_resource(db_engine, device_id).version


def test_concurrent_readers_and_writers_end_with_the_newest_version_cached(task_runtime, app, device_id, make_token,
                                                                          db_engine, redis_client):  # fmt: skip
    """Readers hammer GET (misses fill the cache) while events are applied; after the last write
    the cache may hold nothing older than the database."""
    process_event(make_event(device_id, T0, n=0))
    headers = {"Authorization": f"Bearer {make_token(roles=['user'])}"}
    stop = threading.Event()
    errors: list[str] = []

    def reader() -> None:
        client = app.test_client()
        while not stop.is_set():
            redis_client.delete(cache_key(device_id))  # keep forcing misses, the racy path
            response = client.get(f"/resource/{device_id}", headers=headers)
            if response.status_code != 200:
                errors.append(str(response.status_code))

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()
    try:
        for i in range(1, 151):
            process_event(make_event(device_id, T0 + dt.timedelta(seconds=i), n=i))
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert errors == []
    newest = get_resource(db_engine, device_id)
    assert newest.version == 151
    cached = redis_client.get(cache_key(device_id))
    assert cached is None or json.loads(cached)["version"] == newest.version


def test_an_id_ending_in_version_never_touches_another_devices_cache_keys(
    task_runtime, device_id, db_engine, redis_client, client, auth
):
    """Resource ids may contain ':'. Entries and fences live in disjoint key spaces, so the id
    'X:version' is just another resource, not X's fence (issue 9)."""
    twin = f"{device_id}:version"
    try:
        process_event(make_event(device_id, T0, n=1))
        fence = redis_client.get(fence_key(device_id))
        assert client.get(f"/resource/{twin}", headers=auth).status_code == 404  # was a 500
        process_event(make_event(twin, T0 + dt.timedelta(seconds=1), n=2))
        assert redis_client.get(fence_key(device_id)) == fence  # was deleted by the twin's write
        read = client.get(f"/resource/{twin}", headers=auth)
        assert read.status_code == 200 and read.json["payload"] == {"n": 2}
        assert client.get(f"/resource/{device_id}", headers=auth).json["payload"] == {"n": 1}
    finally:
        with db_engine.begin() as conn:
            conn.execute(text("DELETE FROM events WHERE device_id = :d"), {"d": twin})
            conn.execute(text("DELETE FROM resources WHERE id = :d"), {"d": twin})
        redis_client.delete(cache_key(twin), fence_key(twin))


def test_readers_that_miss_the_same_id_together_share_one_database_read(
    task_runtime, app, device_id, make_token, monkeypatch
):
    """Issue 10, P3: an entry that expires under load sent every request in flight for it to
    PostgreSQL (32-35 reads for 16 ids); now the first loads and the others wait for its row."""
    import app.resources as resources

    process_event(make_event(device_id, T0, temp_c=21.5))  # stored, not cached
    with app.app_context():
        flight = resources.services().resource_loads  # per app (per gunicorn worker)
    release, reads = threading.Event(), []
    real_read = resources.get_resource

    def slow_read(engine, resource_id):
        reads.append(resource_id)
        release.wait(10)  # hold the first read until every other reader has arrived
        return real_read(engine, resource_id)

    monkeypatch.setattr(resources, "get_resource", slow_read)
    headers = {"Authorization": f"Bearer {make_token(roles=('user',))}"}
    answers: list = []

    def read() -> None:
        response = app.test_client().get(f"/resource/{device_id}", headers=headers)
        answers.append((response.status_code, response.headers["X-Cache"], response.get_json()["payload"]))

    readers = [threading.Thread(target=read) for _ in range(24)]
    for reader in readers:
        reader.start()
    wait_for(lambda: flight.waiters(device_id) == 23, timeout=10, message="23 readers wait for the first read")
    release.set()
    for reader in readers:
        reader.join()
    assert reads == [device_id]
    assert answers == [(200, "MISS", {"temp_c": 21.5})] * 24


def test_the_batch_form_has_the_effect_of_one_call_per_event(task_runtime, db_engine, redis_client, unique):
    """process_events (the worker's batch form, issue 10 P4) against process_event, event by event:
    new devices, an older event, a redelivery and a device retry by Idempotency-Key."""
    from sqlalchemy import text as sql

    from tasks.events import process_events

    devices = [f"batch-{unique}-{i}" for i in range(6)]
    first = {d: make_event(d, T0 + dt.timedelta(seconds=10), n=1) for d in devices}
    for device in devices[:3]:  # three devices already have state
        process_event(first[device])
    retry_key = f"retry-{unique}"
    process_event({**make_event(devices[5], T0, n=0), "idempotency_key": retry_key})
    batch = [
        make_event(devices[0], T0 + dt.timedelta(seconds=20), n=2),  # newer: applied, version 2
        make_event(devices[1], T0, n=0),  # older: recorded, not applied
        first[devices[2]],  # a redelivery: nothing at all
        make_event(devices[3], T0, n=3),  # a new device: version 1
        first[devices[4]],  # a new device
        {**make_event(devices[5], T0 + dt.timedelta(seconds=30), n=9), "idempotency_key": retry_key},  # a retry
    ]
    for device in devices:
        redis_client.set(cache_key(device), "stale")
    try:
        process_events([Call((event,), {}) for event in batch])
        state = {d: get_resource(db_engine, d) for d in devices}
        assert (state[devices[0]].version, state[devices[0]].payload) == (2, {"n": 2})
        assert (state[devices[1]].version, state[devices[1]].payload) == (1, {"n": 1})
        assert (state[devices[2]].version, state[devices[3]].version, state[devices[4]].version) == (1, 1, 1)
        assert state[devices[5]].payload == {"n": 0}  # the retry changed nothing
        with db_engine.connect() as conn:
            events = dict(conn.execute(sql("SELECT request_id::text, applied FROM events WHERE device_id = ANY(:d)"),
                                       {"d": devices}).all())  # fmt: skip
        assert events[batch[0]["request_id"]] is True and events[batch[1]["request_id"]] is False
        assert batch[5]["request_id"] not in events  # the retry left no row
        assert len(events) == 4 + 4  # before: 3 + the retry's original; the batch: 4 (no redelivery, no retry)
        assert all(redis_client.get(cache_key(d)) is None for d in devices), "every entry invalidated"
        assert int(redis_client.get(fence_key(devices[0]))) == 2
    finally:
        with db_engine.begin() as conn:
            conn.execute(sql("DELETE FROM events WHERE device_id = ANY(:d)"), {"d": devices})
            conn.execute(sql("DELETE FROM resources WHERE id = ANY(:d)"), {"d": devices})
        redis_client.delete(*[cache_key(d) for d in devices], *[fence_key(d) for d in devices])


def test_a_batch_with_one_unstorable_event_stores_nothing(task_runtime, db_engine, unique):
    """All or nothing, so the worker can run the batch's events one by one afterwards."""
    import psycopg2
    from sqlalchemy import text as sql

    from tasks.events import process_events

    devices = [f"batch-nul-{unique}-{i}" for i in range(3)]
    batch = [make_event(d, T0, n=i) for i, d in enumerate(devices)]
    batch[1]["payload"] = {"text": "nul \u0000 inside"}  # PostgreSQL's jsonb refuses it
    with pytest.raises(psycopg2.DataError):  # the batch runs on the raw cursor; the worker retries singly
        process_events([Call((event,), {}) for event in batch])
    with db_engine.connect() as conn:
        assert conn.execute(sql("SELECT count(*) FROM resources WHERE id = ANY(:d)"), {"d": devices}).scalar() == 0
    with pytest.raises(ValueError, match="one event per device"):
        process_events([Call((batch[0],), {}), Call((batch[0],), {})])
