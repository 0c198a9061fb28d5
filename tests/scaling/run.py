"""``python -m tests.scaling.run [--short]``: act out the worker scaling policy under a load ramp.

Prints one line, writes the report as JSON and a chart as PNG (``--out``, default
``.artifacts/scaling/``), and exits non-zero if a check failed. Needs the local stack (``make up``).
``--short`` is the test suite's version (20x faster, a shorter ramp: about 2.5 minutes);
the default is ``make scale-demo``'s (10x faster: about 6 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from core.settings import load_settings
from tests.scaling.simulator import Report, Step, chart, run

ROOT = Path(__file__).resolve().parents[2]
DEVELOPMENT = {"APP_ENV": "development", "JWT_SECRET": "local-dev-secret", "POSTGRES_PASSWORD": "apppass"}
# 30 -> 600 -> 30 events/s; a task (8 threads, 20 ms per event) serves about 300/s here
LONG = (10.0, [Step(30, 30), Step(150, 600), Step(180, 30)])
SHORT = (20.0, [Step(15, 30), Step(60, 600), Step(75, 30)])


def ramp(short: bool) -> Report:
    settings = load_settings({**DEVELOPMENT, **os.environ}, require_jwt=False)
    factor, steps = SHORT if short else LONG
    return run(settings, steps, time_factor=factor)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="the test suite's shorter, faster ramp")
    parser.add_argument("--out", type=Path, default=ROOT / ".artifacts" / "scaling")
    args = parser.parse_args(argv)
    report = ramp(args.short)
    name = "short" if args.short else "demo"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(asdict(report), indent=1, default=str))
    chart(report, args.out / f"{name}.png")
    print(report.line(), flush=True)
    for problem in report.problems:
        print(f"  scaling: {problem}", flush=True)
    print(f"scaling: report and chart in {args.out}", flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
