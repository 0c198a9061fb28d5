"""The images, built and run for real (issue 14, item 2): both Dockerfile targets built with podman
(``scripts/images``: a stand-in base where no registry is reachable), the API and worker
containers run in production mode against the native stack, and the architecture document's
walk-through passes through them. Skipped, with the reason, only where podman cannot run.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
from collections.abc import Iterator

import jwt
import pytest
from sqlalchemy import text

from tests.helpers import ROOT, free_port, http, start_group_at_end, wait_for

pytestmark = pytest.mark.stack

IMAGES = ROOT / "scripts" / "images"
API_IMAGE, WORKER_IMAGE = "device-backend-api:local", "device-backend-worker:local"
STOP_TIMEOUT = 60  # the worker's documented stop timeout (ECS stopTimeout, compose stop_grace_period)


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "--runtime", "runc", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def images() -> None:
    check = subprocess.run([str(IMAGES), "check"], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"podman cannot run here: {check.stderr.strip()}")
    build = subprocess.run([str(IMAGES), "build"], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr


@pytest.fixture(scope="module")
def containers(images, settings) -> Iterator[dict]:
    """The API and a worker (its own consumer group, starting at the topic's end), production mode."""
    run_id, port = uuid.uuid4().hex[:8], free_port()
    group = f"image-test-{run_id}"
    start_group_at_end(settings.kafka_options, group, "events-input")
    secret = uuid.uuid4().hex + uuid.uuid4().hex  # 64 bytes: production refuses short secrets
    variables = {"APP_ENV": "production", "JWT_SECRET": secret, "POSTGRES_PASSWORD": settings.postgres_password,
                 "POSTGRES_PORT": settings.postgres_port, "REDIS_URL": settings.redis_url,
                 "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}  # fmt: skip
    env = [arg for name, value in variables.items() for arg in ("-e", f"{name}={value}")]
    names = {"api": f"api-{run_id}", "worker": f"worker-{run_id}"}
    # the host's network: the native stack listens on loopback
    common = ["-d", "--network", "host", *env]
    subprocess.run([str(IMAGES), "run", *common, "--name", names["api"], "-e", f"BIND=127.0.0.1:{port}",
                    "-e", "WEB_CONCURRENCY=2", API_IMAGE], check=True, capture_output=True)  # fmt: skip
    worker = ["python", "worker.py", "run", "--group", group]
    subprocess.run([str(IMAGES), "run", *common, "--name", names["worker"], "--stop-timeout", str(STOP_TIMEOUT),
                    WORKER_IMAGE, *worker], check=True, capture_output=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(url), timeout=60, message="the API container is ready")
        yield {"url": url, "secret": secret, **names}
    finally:
        for name in names.values():
            _podman("rm", "-f", "-t", "5", name, check=False)


def _ready(url: str) -> bool:
    try:
        return http("GET", f"{url}/readyz")[0] == 200
    except OSError:
        return False


def _token(secret: str, device: str) -> str:
    now = dt.datetime.now(dt.UTC)
    claims = {"sub": "device-tester", "roles": ["device", "user"], "device_id": device, "iat": now,
              "exp": now + dt.timedelta(hours=1)}  # fmt: skip
    return jwt.encode(claims, secret, algorithm="HS256")


def test_both_images_run_as_an_unprivileged_user(containers):
    for image in (API_IMAGE, WORKER_IMAGE):
        assert _podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip() == "app"
    for name in (containers["api"], containers["worker"]):
        assert _podman("exec", name, "id", "-u").stdout.strip() == "10001"


def test_the_api_image_healthcheck_passes(containers):
    configured = _podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", API_IMAGE).stdout
    assert "/healthz" in configured
    assert _podman("healthcheck", "run", containers["api"], check=False).returncode == 0


def test_the_walk_through_passes_through_the_containers(containers, db_engine):
    device = f"device-img-{uuid.uuid4().hex[:8]}"
    token = _token(containers["secret"], device)
    event = {"device_id": device, "payload": {"status": "online", "temp_c": 37.2}}
    status, _, body = http("POST", f"{containers['url']}/events", token, event)
    assert status == 202, body
    request_id = json.loads(body)["request_id"]

    def stored():
        with db_engine.connect() as conn:
            return conn.execute(text("SELECT payload, version FROM resources WHERE id = :d"), {"d": device}).first()

    row = wait_for(stored, timeout=60, message="the worker container stored the event")
    assert row.payload == event["payload"] and row.version == 1
    logs = _podman("logs", containers["worker"]).stdout + _podman("logs", containers["worker"]).stderr
    processed = [json.loads(line) for line in logs.splitlines() if '"Processed message"' in line]
    assert any(entry.get("request_id") == request_id for entry in processed)
    first = http("GET", f"{containers['url']}/resource/{device}", token)
    second = http("GET", f"{containers['url']}/resource/{device}", token)
    assert (first[0], second[0]) == (200, 200)
    assert first[1]["X-Cache"] == "MISS" and second[1]["X-Cache"] == "HIT"
    assert json.loads(second[2])["payload"] == event["payload"]


def test_the_worker_container_drains_on_sigterm_within_its_stop_timeout(containers, db_engine):
    """`podman stop` sends the image's STOPSIGNAL (SIGTERM): the worker finishes and commits
    what it has, leaves the group and exits 0 well before the stop timeout would SIGKILL it."""
    devices = [f"device-drain-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    for device in devices:
        token = _token(containers["secret"], device)
        event = {"device_id": device, "payload": {"n": 1}}
        assert http("POST", f"{containers['url']}/events", token, event)[0] == 202
    started = time.monotonic()
    _podman("stop", "-t", str(STOP_TIMEOUT), containers["worker"])
    took = time.monotonic() - started
    state = json.loads(_podman("inspect", "--format", "{{json .State}}", containers["worker"]).stdout)
    assert state["ExitCode"] == 0 and took < STOP_TIMEOUT - 10, (state, took)
    logs = _podman("logs", containers["worker"])
    lines = (logs.stdout + logs.stderr).splitlines()
    assert any("signal SIGTERM: draining" in line for line in lines)
    assert any('"worker stopped"' in line for line in lines)
    # everything accepted before the stop is stored: drained, or left uncommitted for the next worker
    _podman("start", containers["worker"])

    def all_stored():
        with db_engine.connect() as conn:
            ids = conn.execute(text("SELECT id FROM resources WHERE id = ANY(:d)"), {"d": devices}).scalars()
            return set(ids) == set(devices)

    wait_for(all_stored, timeout=60, message="every event accepted before the stop is stored")
