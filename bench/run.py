"""`make bench`: every figure of the performance issue, measured in one run, side by side with its peer.

    python -m bench.run [--quick] [--only http,tasks,storage,ingest,peer,mixed,tracing]

Prints one table (figure, ours, peer, ratio, goal) and saves everything as JSON under
bench/results/. Needs the local stack (`make bench` starts it), wrk (Debian), vegeta (built
from its Go module into .stack/bin) and the peers' venv (.stack/bench-venv, requirements-bench.txt).

What each clock includes is said where it is measured. HTTP: wrk with 1 thread at 8, 32 and 128
connections (best of the three), vegeta at a constant half of that best rate for p50/p99; the
CPU figure is the gunicorn workers' user+system time per request. Tasks: 20,000 no-op tasks that
each INCR a Redis counter, enqueued first, then drained by 2 processes x 8 threads; the clock
runs from starting the worker command to the counter reaching 20,000 (start-up included), and
from 2,000 to 20,000 (steady state).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform

from bench import mixed
from bench.common import DETAILS, RESULTS, ROOT, ROWS
from bench.http_section import bench_http
from bench.ingest_section import bench_ingest
from bench.peer_section import bench_peer
from bench.storage_section import bench_storage
from bench.tasks_section import bench_tasks
from bench.tracing_section import bench_tracing


def table() -> str:
    lines = ["| figure | ours | peer | ratio | goal | met |", "|---|---|---|---|---|---|"]
    for row in ROWS:
        ours = "" if row.ours is None else f"{row.ours:,.2f}" if row.ours < 10 else f"{row.ours:,.0f}"
        peer = "" if row.peer is None else (f"{row.peer:,.2f}" if row.peer < 10 else f"{row.peer:,.0f}")
        peer = f"{peer} ({row.peer_name})" if row.peer_name and peer else peer
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.figure} | {ours} | {peer} | {ratio} | {row.goal} | {met} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs (for a smoke test, not for figures)")
    parser.add_argument("--only", default="http,tasks,storage,ingest,peer,mixed,tracing")
    parser.add_argument("--rounds", type=int, default=2, help="peer: interleaved rounds of ours and the peer")
    parser.add_argument("--mixed-seconds", type=int, default=15, help="mixed: seconds per rate")
    parser.add_argument("--mixed-rates", default="0,100,250,500,2x", help="mixed: POST/s beside 800 GET/s")
    parser.add_argument(
        "--mixed-modes",
        default="api_alone,whole_system,api_split,whole_system_split",
        help="mixed: api_alone, whole_system, and each with _split (writes in their own pool)",
    )
    args = parser.parse_args()
    sections = set(args.only.split(","))
    seconds = 2 if args.quick else 5

    if "http" in sections:
        bench_http(seconds)
    if "tasks" in sections:
        bench_tasks(4000 if args.quick else 20000)
    if "storage" in sections:
        bench_storage(500 if args.quick else 2000, 4 if args.quick else 10)
    if "ingest" in sections:
        bench_ingest(10 if args.quick else 60, 1000)
    if "peer" in sections:
        bench_peer(seconds, 1 if args.quick else args.rounds)
    if "mixed" in sections:
        mixed.bench_mixed(5 if args.quick else args.mixed_seconds, args.mixed_rates, args.mixed_modes)
    if "tracing" in sections:
        bench_tracing(2 if args.quick else 10, 100 if args.quick else 500)
    machine = (
        f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps({"date": stamp, "machine": machine, "quick": args.quick,
                                "rows": [dataclasses.asdict(r) | {"ratio": r.ratio} for r in ROWS],
                                "details": DETAILS, "tables": mixed.TABLES}, indent=2, default=str))  # fmt: skip
    print(f"\n{stamp}, {machine}{' (quick)' if args.quick else ''}\n")
    print(table())
    for extra in mixed.TABLES:
        print(f"\n{extra}")
    print(f"\nsaved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
