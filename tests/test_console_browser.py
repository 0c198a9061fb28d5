"""The /admin console in a real headless Chromium (Debian's, through its ChromeDriver), against
real processes: gunicorn with gevent workers and ``worker.py`` on the real stack (issue 13).

Sign in with an admin token, watch the lag rise while events flow with no worker and fall to
zero once one runs, then replay a dead letter and watch it processed. Screenshots of each step
are kept in ``.artifacts/console/`` (``TEST_ARTIFACTS_DIR`` overrides), git-ignored.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest

from broker import KafkaBroker, Message
from broker.consumer import Record
from broker.dead_letters import dead_letter_headers
from tests.helpers import ROOT, free_port, http, start_group_at_end, stop_processes, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.slow]
SECRET = "local-dev-secret"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / ".artifacts")) / "console"


def token(roles: list[str], sub: str) -> str:
    claims = {"sub": sub, "roles": roles, "exp": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture
def system(settings, make_topic, unique, tmp_path) -> Iterator[dict]:
    """gunicorn and (on demand) worker.py, with a consumer group and dead-letter topic of their own."""
    group, dlq = f"console-{unique}", make_topic(partitions=1, name=f"dlq-console-{unique}")
    start_group_at_end(settings.kafka_options, group, "events-input")
    port = free_port()
    env = {**os.environ, "APP_ENV": "development", "JWT_SECRET": SECRET,
           "POSTGRES_PASSWORD": settings.postgres_password, "BIND": f"127.0.0.1:{port}",
           "WEB_CONCURRENCY": "2", "LOG_LEVEL": "INFO",
           "KAFKA_CONSUMER_GROUP": group, "KAFKA_TOPIC_DLQ": dlq,
           "RATE_LIMIT_EVENTS": "100000/second", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
           "ADMIN_SIGN_IN_PER_MINUTE": "1000"}  # other tests sign in from 127.0.0.1 too  # fmt: skip
    procs: list[subprocess.Popen] = []

    def start(name: str, argv: list[str], **extra: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, cwd=ROOT, env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    start("api", [gunicorn, "-c", "gunicorn.conf.py", "wsgi:app"])
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(url), timeout=60, message="gunicorn answers /healthz")
    worker_env = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}

    def start_worker() -> subprocess.Popen:
        log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "worker.py", "run", "-p", "2", "-t", "4"], cwd=ROOT, env=worker_env,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        procs.append(proc)
        return proc

    broker = KafkaBroker(**settings.kafka_options)
    try:
        yield {"url": url, "dlq": dlq, "group": group, "start_worker": start_worker, "broker": broker, "logs": tmp_path}
    finally:
        stop_processes(procs, timeout=60)
        broker.close()


def _answers(url: str) -> bool:
    try:
        return http("GET", f"{url}/healthz")[0] == 200
    except OSError:
        return False


@pytest.fixture
def browser() -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "Debian's chromium and chromium-driver are needed: `make browser` installs them"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--no-first-run"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def total_lag(driver, url: str) -> int:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/admin/")
    found = driver.find_elements(By.ID, "total-lag")  # absent while Kafka does not answer
    return int(found[0].text) if found else -1


def test_sign_in_watch_the_lag_and_replay_a_dead_letter_in_chromium(system, browser):
    from selenium.webdriver.common.by import By

    url = system["url"]
    # sign in: the token is pasted once; the browser keeps an HttpOnly session cookie
    browser.get(f"{url}/admin/")
    assert browser.current_url.endswith("/admin/login")
    browser.find_element(By.ID, "token").send_keys(token(["admin"], "ops-alice"))
    browser.find_element(By.ID, "sign-in").click()  # returns before the next page loads: wait for it
    wait_for(lambda: browser.current_url.endswith("/admin/"), timeout=30, message=browser.current_url)
    session = browser.get_cookie("admin_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == ""  # nothing readable by a script
    shot(browser, "01-overview-signed-in")

    # events flow with no worker: the lag rises
    device_token = token(["device", "user"], "device-tester")
    devices = [f"console-{uuid.uuid4().hex[:8]}" for _ in range(20)]

    def post(n: int) -> int:
        event = {"device_id": devices[n % len(devices)], "payload": {"n": n}}
        return http("POST", f"{url}/events", device_token, event)[0]

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, range(400)))
    assert statuses.count(202) == 400
    assert wait_for(lambda: total_lag(browser, url) >= 400, timeout=30)
    shot(browser, "02-lag-rising")

    # a worker starts: the lag falls to zero while the page refreshes
    system["start_worker"]()
    seen = []
    wait_for(lambda: seen.append(total_lag(browser, url)) or seen[-1] == 0, timeout=120, interval=1, message=str(seen))
    assert seen[0] >= 1 or len(seen) == 1
    wait_for(lambda: "process_event" in _text(browser, f"{url}/admin/"), timeout=30, interval=1)
    shot(browser, "03-lag-drained")

    # a dead letter (as a worker writes it), replayed from the console and processed
    device = f"console-dlq-{uuid.uuid4().hex[:8]}"
    event = {"device_id": device, "payload": {"replayed": True}, "received_at": dt.datetime.now(dt.UTC).isoformat(),
             "request_id": str(uuid.uuid4())}  # fmt: skip
    message = Message(actor_name="process_event", topic="events-input", args=(event,), key=device,
                      headers={"request_id": "req-console-test"})  # fmt: skip
    record = Record("events-input", 0, 0, device.encode(), message.encode(), [], int(time.time() * 1000))
    failure = RuntimeError("PostgreSQL refused it (before the fix)")
    headers = dead_letter_headers(record, failure, message=message, attempts=4, host="worker-1")
    system["broker"].produce(system["dlq"], device.encode(), message.encode(), headers)(10)

    browser.get(f"{url}/admin/dead-letters")
    assert message.message_id in browser.page_source and "req-console-test" in browser.page_source
    browser.find_element(By.CSS_SELECTOR, f'input[aria-label="select {message.message_id}"]').click()
    shot(browser, "04-dead-letters")
    browser.find_element(By.ID, "replay-selected").click()
    wait_for(lambda: browser.find_elements(By.ID, "confirm-count"), timeout=30)
    assert browser.find_element(By.ID, "confirm-count").text == "1"
    shot(browser, "05-confirm-replay")
    browser.find_element(By.ID, "confirm").click()
    wait_for(lambda: "Replayed 1 dead letter(s)" in browser.page_source, timeout=30, message=browser.page_source[:3000])

    reader = token(["user"], "reader")

    def stored() -> dict | None:
        status, _, body = http("GET", f"{url}/resource/{device}", reader)
        return json.loads(body) if status == 200 else None

    resource = wait_for(stored, timeout=60, interval=0.5, message="the replayed event in PostgreSQL")
    assert resource["payload"] == {"replayed": True}
    browser.get(f"{url}/admin/dead-letters")
    row = browser.find_element(By.XPATH, f"//tr[td/a[text()='{message.message_id}']]")
    assert row.find_elements(By.TAG_NAME, "td")[-1].text  # its "replayed" column is filled in
    shot(browser, "06-replayed")
    audit = [line for line in (system["logs"] / "api.log").read_text().splitlines() if "replayed dead letters" in line]
    assert audit and "ops-alice" in audit[0]


def _text(driver, url: str) -> str:
    driver.get(url)
    return driver.page_source
