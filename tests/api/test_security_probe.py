"""The black-box probe (scripts/security_probe.py) against the API under gunicorn with its gevent
workers, on a free loopback port: no 5xx, no bypass, across the API and the console (issue 20).

It waits out the rate limits it trips (about a minute in all), hence the slow tier."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from tests.api.test_load_shedding import _api
from tests.helpers import ROOT

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def test_the_probe_finds_no_5xx_and_no_bypass(settings, redis_client):
    try:
        with _api(settings, WEB_CONCURRENCY="2") as (url, _):
            probe = subprocess.run([sys.executable, "scripts/security_probe.py", url, "--secret", settings.jwt_secret],
                                   cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:  # the probe used up 127.0.0.1's sign-in attempts for this minute: give them back
        redis_client.delete("admin:sign-in:" + hashlib.sha256(b"127.0.0.1").hexdigest())
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert " 0 finding(s);" in probe.stdout
