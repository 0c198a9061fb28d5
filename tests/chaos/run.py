"""``python -m tests.chaos.run [--short] [SCENARIO ...]``: run chaos scenarios against the local stack.

Prints one line per scenario (``SCENARIO acked=N lost=N dup=N stale=N dlq=N 5xx=N recovered_s=X``)
and exits non-zero on any loss, duplicate, staleness, non-recovery or failed check. Needs the
local stack (``make up``); it stops and restarts its servers, so run it alone, not beside tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from core.settings import load_settings
from tests.chaos.scenarios import SCENARIOS
from tests.chaos.system import log, stack

CI_SCENARIOS = ["worker-kill", "kafka-restart", "kafka-freeze", "postgres-outage", "poison"]
DEVELOPMENT = {"APP_ENV": "development", "JWT_SECRET": "local-dev-secret", "POSTGRES_PASSWORD": "apppass"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "scenarios", nargs="*", help=f"default: all ({', '.join(SCENARIOS)}); with --short: {', '.join(CI_SCENARIOS)}"
    )
    parser.add_argument("--short", action="store_true", help="the CI version: shorter outages, fewer repetitions")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    names = args.scenarios or (CI_SCENARIOS if args.short else list(SCENARIOS))
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}")
    settings = load_settings({**DEVELOPMENT, **os.environ}, require_jwt=False)
    results, failed = [], False
    for name in names:
        started = time.monotonic()
        try:
            result = SCENARIOS[name](settings, args.short)
        finally:
            stack("up")  # whatever happened, leave every server running for the next scenario
        print(result.line(), flush=True)
        for problem in result.problems:
            print(f"  {name}: {problem}", flush=True)
        log(f"{name}: {'ok' if result.ok else 'FAILED'} in {time.monotonic() - started:.0f}s")
        failed |= not result.ok
        results.append({**result.__dict__, "ok": result.ok})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
