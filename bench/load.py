"""The load generators the sections drive: wrk (closed loop, the best rate) and vegeta (open loop,
latency at a constant rate), and vegeta's targets for many devices posting events.

Separate from the sections because several use them (http, ingest, mixed, bench.ab) and from
:mod:`bench.common` because they are the only part that runs a load generator's binary.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

from bench.common import BIN, DETAILS, say, shutil_which


def wrk_output(url: str, connections: int, seconds: int, headers: dict[str, str], body: dict | None = None) -> str:
    """wrk's report for one run (1 thread, latency percentiles; a POST of ``body`` when given)."""
    script = None
    args = [str(shutil_which("wrk")), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    if body is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')  # fmt: skip
        script.close()
        args += ["-s", script.name]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    if script is not None:
        os.unlink(script.name)
    return out


def wrk(url: str, connections: int, seconds: int, headers: dict[str, str], body: dict | None = None) -> float:
    """2xx answers per second (others, such as a 503 from load shedding, are counted out and noted)."""
    out = wrk_output(url, connections, seconds, headers, body)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad and int(bad.group(1)) > 0:  # shed (503) when the loop lags: counted out, not fatal
        say(f"{url} at {connections} connections: {bad.group(1)} answers not 2xx (not counted)")
        noted = {"url": url, "connections": connections, "count": int(bad.group(1))}
        DETAILS.setdefault("wrk_not_2xx", []).append(noted)
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", out)
    took = float(done.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    return (int(done.group(1)) - (int(bad.group(1)) if bad else 0)) / took


def vegeta(url: str, rate: int, seconds: int, headers: dict[str, str], body: dict | None = None) -> dict:
    """Latency at a constant ``rate``: p50/p99 in ms, and the share of 2xx answers."""
    target = [f"{'POST' if body is not None else 'GET'} {url}", *(f"{k}: {v}" for k, v in headers.items())]
    with tempfile.TemporaryDirectory() as tmp:
        if body is not None:
            (Path(tmp) / "body.json").write_text(json.dumps(body))
            target += ["Content-Type: application/json", f"@{Path(tmp) / 'body.json'}"]
        command = [str(BIN / "vegeta"), "attack", f"-rate={rate}", f"-duration={seconds}s", "-timeout=10s"]
        attack = subprocess.run(command, input=("\n".join(target) + "\n").encode(), capture_output=True, check=True)
        report = subprocess.run([str(BIN / "vegeta"), "report", "-type=json"], input=attack.stdout,
                                capture_output=True, check=True)  # fmt: skip
    data = json.loads(report.stdout)
    return {"rate": rate, "p50_ms": data["latencies"]["50th"] / 1e6, "p99_ms": data["latencies"]["99th"] / 1e6,
            "success": data["success"], "throughput": data["throughput"]}  # fmt: skip


def event_targets(directory: Path, url: str, auth: dict, prefix: str, devices: int = 1000) -> str:
    """vegeta targets POSTing to /events for ``devices`` devices in turn (vegeta cycles through
    them): real traffic comes from many devices, and one device's events run strictly in order."""
    lines = []
    for i in range(devices):
        body = directory / f"body-{i}.json"
        body.write_text(json.dumps({"device_id": f"{prefix}-{i}", "payload": {"status": "online", "temp_c": 37.2}}))
        lines.append(f"POST {url}/events\nAuthorization: {auth['Authorization']}\n"
                     f"Content-Type: application/json\n@{body}\n")  # fmt: skip
    return "\n".join(lines)
