"""The benchmark's ingest section (``--only ingest``): the whole system on this machine (API, worker,
PostgreSQL, Kafka) at a constant POST rate, with the group's lag sampled, then freshness (202 ->
``GET`` shows the new payload) at half the measured POST capacity. ``freshness`` is its own
function, as it runs beside any load.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import BIN, DETAILS, ROWS, Row, forget_resource, gunicorn, say, start_worker, token
from bench.load import event_targets
from tests.helpers import start_group_at_end


def bench_ingest(seconds: int, rate: int) -> None:
    """API + worker + PostgreSQL + Kafka on this machine: POST at ``rate``/s for ``seconds`` with
    the worker running (its own group, from the topic's end), sampling the group's lag; then
    freshness (202 -> GET shows the new payload) at half the measured max POST rate."""
    from broker.brokers.kafka.admin import consumer_lag
    from core.settings import load_settings

    settings = load_settings(require_jwt=False)
    group = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    start_group_at_end(settings.kafka_options, group, "events-input")
    auth = {"Authorization": f"Bearer {token()}"}
    worker = start_worker(["--group", group])
    device = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    try:
        with gunicorn("wsgi:app", {"RATE_LIMIT_EVENTS": "10000000/second", "LOG_LEVEL": "INFO"}) as (url, _):
            from broker.brokers.kafka import client_options

            options = client_options(**settings.kafka_options)
            lags: list[int] = []
            with tempfile.TemporaryDirectory() as tmp:
                targets = event_targets(Path(tmp), url, auth, device)
                results = Path(tmp) / "results.bin"  # a file: a pipe left unread would stall vegeta
                attack = subprocess.Popen([str(BIN / "vegeta"), "attack", f"-rate={rate}", f"-duration={seconds}s",
                                           "-timeout=10s", f"-output={results}"], stdin=subprocess.PIPE)  # fmt: skip
                attack.stdin.write(targets.encode())
                attack.stdin.close()
                while attack.poll() is None:
                    time.sleep(5)
                    lags.append(consumer_lag(options, group, ["events-input"])["total_lag"])
                raw = results.read_bytes()
            report = json.loads(subprocess.run([str(BIN / "vegeta"), "report", "-type=json"], input=raw,
                                               capture_output=True, check=True).stdout)  # fmt: skip
            lags.append(consumer_lag(options, group, ["events-input"])["total_lag"])
            accepted = report["throughput"]  # vegeta's throughput already counts successes only
            bounded = max(lags[len(lags) // 2 :]) <= max(rate, 1000) * 2  # under 2 s of backlog, not growing
            DETAILS["end_to_end"] = {"rate": rate, "seconds": seconds, "accepted_per_s": accepted,
                                     "success": report["success"], "status_codes": report["status_codes"],
                                     "lag_samples": lags,
                                     "p99_ms": report["latencies"]["99th"] / 1e6}  # fmt: skip
            say(f"end to end: {accepted:.0f} accepted/s of {rate}/s ({report['status_codes']}), lag samples {lags}")
            ROWS.append(Row(f"end to end at {rate}/s for {seconds} s, accepted/s", accepted, None, "", "events/s",
                            "P2 >= 1,000/s", accepted >= 0.99 * rate))  # fmt: skip
            ROWS.append(Row("  consumer lag, last sample (samples every 5 s)", lags[-1], None, "", "records",
                            "P2 bounded", bounded))  # fmt: skip
            half = int(DETAILS.get("post_max_rate", 400) / 2)
            fresh = freshness(url, auth, half, seconds=max(10, seconds // 3))
            ROWS.append(Row(f"freshness p99 at {half} POST/s, ms", fresh["p99_ms"], None, "", "ms", "P5 <= 50 ms",
                            fresh["p99_ms"] <= 50))  # fmt: skip
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
        forget_resource(*(f"{device}-{i}" for i in range(1000)))


def freshness(url: str, auth: dict, rate: int, seconds: int) -> dict:
    """Background POSTs at ``rate``/s; meanwhile probes: POST a new payload, then GET until it shows."""
    import http.client

    probe = f"bench-fresh-{uuid.uuid4().hex[:8]}"
    host, port = url.removeprefix("http://").split(":")
    samples: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        load = subprocess.Popen([str(BIN / "vegeta"), "attack", f"-rate={rate}", f"-duration={seconds}s"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)  # fmt: skip
        load.stdin.write(event_targets(Path(tmp), url, auth, f"{probe}-load").encode())
        load.stdin.close()
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {**auth, "Content-Type": "application/json"}
        while load.poll() is None:
            marker = uuid.uuid4().hex
            conn.request("POST", "/events", json.dumps({"device_id": probe, "payload": {"m": marker}}), headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 202
            accepted = time.perf_counter()
            while True:
                conn.request("GET", f"/resource/{probe}", headers=auth)
                response = conn.getresponse()
                data = response.read()
                if response.status == 200 and json.loads(data)["payload"].get("m") == marker:
                    break
                if time.perf_counter() - accepted > 10:
                    raise SystemExit("bench: an event did not show within 10 s")
                time.sleep(0.002)
            samples.append(time.perf_counter() - accepted)
            time.sleep(0.05)
    samples.sort()
    result = {"rate": rate, "probes": len(samples), "p50_ms": samples[len(samples) // 2] * 1000,
              "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000}  # fmt: skip
    DETAILS["freshness"] = result
    forget_resource(probe, *(f"{probe}-load-{i}" for i in range(1000)))
    say(f"freshness: {result}")
    return result
