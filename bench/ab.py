"""A/B of API settings in one run: two (or more) gunicorn pools of the API that differ only in
environment variables, measured in interleaved rounds (the order alternates) with the mixed
phase's open loop (800 cache-hit GET/s beside N POST/s, bench/mixed.py) and wrk at 128
connections on the GET hit. For a change's before/after in docs/performance.md.

    python -m bench.ab API_READS_FIRST=0 API_READS_FIRST=1 --rates 0,250,500 --rounds 3

Each argument is one pool: ``NAME=value`` pairs joined by ``+`` (``-`` for no change). Needs the
local stack, vegeta and wrk (``make bench`` provides them); prints one JSON line per
measurement and a summary (median and range per pool).
"""

from __future__ import annotations

import argparse
import json
import statistics
import uuid
from contextlib import ExitStack

from bench import mixed as m
from bench.common import forget_resource, gunicorn, token


def _pool_env(spec: str) -> dict[str, str]:
    if spec == "-":
        return {}
    return dict(pair.split("=", 1) for pair in spec.split("+"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pools", nargs="+", help="NAME=value[+NAME=value...] per pool, '-' for the defaults")
    parser.add_argument("--rates", default="0,250,500", help="POST/s beside 800 GET/s (2x: twice the capacity)")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--get-rate", type=int, default=m.GET_RATE, help="cache-hit GET/s beside the POSTs")
    parser.add_argument("--no-c128", action="store_true", help="skip wrk at 128 connections on the GET hit")
    args = parser.parse_args()
    m.GET_RATE = args.get_rate  # open_loop reads it at call time
    auth = {"Authorization": f"Bearer {token()}"}
    run = uuid.uuid4().hex[:6]
    results: dict[tuple[str, str], list[dict]] = {}
    with ExitStack() as stack:
        urls = {spec: stack.enter_context(gunicorn("wsgi:app", {**m.API_ENV, **_pool_env(spec)}))[0]
                for spec in args.pools}  # fmt: skip
        hit = m._cached_resource(urls[args.pools[0]], auth["Authorization"].removeprefix("Bearer "))
        rates = args.rates.split(",")
        if "2x" in rates:  # twice the first pool's POST capacity (wrk, 8 and 32 connections)
            capacity = m.post_capacity(urls[args.pools[0]], auth, 5)
            print(json.dumps({"post_capacity_per_s": capacity}), flush=True)
            rates = [str(int(2 * capacity)) if rate == "2x" else rate for rate in rates]
        for r in range(args.rounds):
            order = args.pools if r % 2 == 0 else args.pools[::-1]
            for rate in [int(x) for x in rates]:
                for spec in order:
                    out = m.open_loop(urls[spec], auth, hit, rate, args.seconds, f"ab-{run}-{r}-{rate}")
                    get, post = out["get"], out.get("post", {})
                    line = {"round": r, "pool": spec, "what": f"mix {rate} POST/s", "get_p50_ms": get.get("p50_ms"),
                            "get_p99_ms": get.get("p99_ms"), "get_max_ms": get.get("max_ms"),
                            "post_p99_ms": post.get("p99_ms"), "accepted_per_s": post.get("ok_per_s"),
                            "shed": post.get("shed", 0) + get.get("shed", 0),
                            "failed": post.get("failed", 0)}  # fmt: skip
                    results.setdefault((line["what"], spec), []).append(line)
                    print(json.dumps(line), flush=True)
            if not args.no_c128:
                for spec in order:
                    wrk = m.wrk_run(f"{urls[spec]}/resource/{hit}", 128, 5, auth)
                    line = {"round": r, "pool": spec, "what": "GET c=128", "rate": wrk["rate"],
                            "get_p99_ms": wrk["p99_ms"]}  # fmt: skip
                    results.setdefault((line["what"], spec), []).append(line)
                    print(json.dumps(line), flush=True)
    forget_resource(hit)
    print("\nsummary: median [min-max] over rounds")
    for (what, spec), lines in results.items():
        cells = []
        for key in ("get_p99_ms", "post_p99_ms", "accepted_per_s", "rate"):
            values = [v[key] for v in lines if v.get(key) is not None]
            if values:
                cells.append(f"{key} {statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]")
        print(f"{what:18} {spec:40} " + "; ".join(cells))


if __name__ == "__main__":
    main()
