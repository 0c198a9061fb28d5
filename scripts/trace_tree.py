"""Print one trace from Jaeger's query API as a tree: each span with its service, its start from
the trace's start, its duration, and what matters in it (status, attempt, events, statement).

The Jaeger ``make traces`` builds from its Go module has no UI (the module carries a placeholder
page, not the UI's built files), so this is the look at a trace from the terminal. Standard
library only.

    python scripts/trace_tree.py                  # the newest trace of device-api
    python scripts/trace_tree.py 4bf92f3577b34da6a3ce929d0e0e4736
    python scripts/trace_tree.py --service device-worker --query http://127.0.0.1:16686
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

# the attributes shown, under a short name (the statement bare)
SHOWN_TAGS = {"http.status_code": "status=", "broker.attempt": "attempt=", "messaging.kafka.message.key": "key=",
              "error.type": "error=", "db.statement": ""}  # fmt: skip


def get(url: str) -> Any:
    """The decoded JSON body at ``url`` (Jaeger's query API answers ``{"data": ...}``)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def newest_trace_id(query: str, service: str) -> str | None:
    """The id of the newest trace that holds a span of ``service`` (within the last hour)."""
    params = urllib.parse.urlencode({"service": service, "lookback": "1h", "limit": 20})
    traces = get(f"{query}/api/traces?{params}")["data"] or []
    newest = max(traces, key=lambda t: max(s["startTime"] for s in t["spans"]), default=None)
    return newest["traceID"] if newest else None


def render(trace: dict) -> list[str]:
    """The trace's spans as indented lines, children below their parent in start order."""
    services = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    spans = {s["spanID"]: s for s in trace["spans"]}
    children: dict[str | None, list[dict]] = {}
    for span in spans.values():
        parent = next((r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"), None)
        children.setdefault(parent if parent in spans else None, []).append(span)
    start = min(s["startTime"] for s in spans.values())
    end = max(s["startTime"] + s["duration"] for s in spans.values())
    lines = [f"trace {trace['traceID']}: {len(spans)} spans, {(end - start) / 1000:.1f} ms, "
             f"{', '.join(sorted(set(services.values())))}"]  # fmt: skip

    def walk(span: dict, depth: int) -> None:
        tags = {t["key"]: t["value"] for t in span.get("tags", [])}
        notes = [f"{label}{str(tags[key]).rsplit('.', 1)[-1] if key == 'error.type' else str(tags[key])[:48]}"
                 for key, label in SHOWN_TAGS.items() if key in tags]  # fmt: skip
        if tags.get("otel.status_code") == "ERROR":
            notes.insert(0, "ERROR")
        events = [f["value"] for log in span.get("logs", []) for f in log["fields"] if f["key"] == "event"]
        notes += [f"event:{name}" for name in events]
        label = f"{'  ' * depth}{span['operationName']}"
        lines.append(
            f"{label:<28} {services.get(span['processID'], '?'):<13} +{(span['startTime'] - start) / 1000:>7.1f} ms "
            f"{span['duration'] / 1000:>6.1f} ms  {' '.join(notes)}"
        )
        for child in sorted(children.get(span["spanID"], []), key=lambda s: s["startTime"]):
            walk(child, depth + 1)

    for root in sorted(children.get(None, []), key=lambda s: s["startTime"]):
        walk(root, 0)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace_id", nargs="?", help="the trace (default: the newest of --service)")
    parser.add_argument("--query", default="http://127.0.0.1:16686", help="Jaeger's query address")
    parser.add_argument("--service", default="device-api", help="whose newest trace, without a trace id")
    args = parser.parse_args(argv)
    query = args.query.rstrip("/")
    try:
        trace_id = args.trace_id or newest_trace_id(query, args.service)
        if trace_id is None:
            print(f"no trace of {args.service} in the last hour at {query}", file=sys.stderr)
            return 1
        data = get(f"{query}/api/traces/{trace_id}")["data"]
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        print(f"trace_tree: {query}: {exc}", file=sys.stderr)
        return 1
    for trace in data:
        print("\n".join(render(trace)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
