"""The benchmark's tracing section (``--only tracing``): what OpenTelemetry costs, from
``bench/tracing_cost.py`` run in a process of its own, as two rows of the table.
"""

from __future__ import annotations

import json
import statistics
import subprocess

from bench.common import DETAILS, PY, ROOT, ROWS, Row, say


def bench_tracing(rounds: int, block: int) -> None:
    """What OpenTelemetry costs, off against on (all sampled), in one run: ``bench/tracing_cost.py``
    in a process of its own (it installs tracer providers), CPU per request and per message."""
    out = subprocess.run([PY, "-m", "bench.tracing_cost", "--rounds", str(rounds), "--block", str(block)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout  # fmt: skip
    report = json.loads(out.strip().splitlines()[-1])
    DETAILS["tracing"] = report
    for phase, label in (("post", "CPU per POST /events"), ("message", "CPU per worker message")):
        figures = report["figures"][phase]
        on, off = statistics.median(figures["on_us"]), statistics.median(figures["off_us"])
        ROWS.append(Row(f"{label} with tracing on (100 % sampled), us", on, off, "tracing off", "us"))
        say(f"tracing: {label}: off {off:.0f} us, on {on:.0f} us ({on / off:.2f}x)")
