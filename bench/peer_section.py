"""The benchmark's FastAPI-peer section (``--only peer``): the architecture document's own stack
(``bench/fastapi_peer.py``, in the bench's venv) against ours, interleaved in the same run: wrk at
8/32/128 connections on the GET hit and the POST, and the 800 GET/s + 500 POST/s open-loop mix,
each repeated; ratios per round.

The load (``wrk_run``, ``open_loop``) and the servers (``fastapi_peer``, ``scratch_topic``) are
:mod:`bench.mixed`'s, which measures with the same clocks: the load generator's, on the same 2
cores as everything else.
"""

from __future__ import annotations

import uuid

from bench import mixed as m
from bench.common import DETAILS, ROWS, Row, cpu_seconds_of_children, forget_resource, gunicorn, say, token


def bench_peer(seconds: int, rounds: int = 2) -> None:
    """Ours and the FastAPI stack, interleaved: per round, each app's GET and POST under wrk at
    8/32/128 connections, then each one's 800 GET/s + 500 POST/s open loop (API alone)."""
    auth = {"Authorization": f"Bearer {token()}"}
    bearer = auth["Authorization"].removeprefix("Bearer ")
    run = uuid.uuid4().hex[:8]
    forget: list[str] = []
    out: dict[str, list] = {"ours": [], "fastapi": []}
    with gunicorn("wsgi:app", m.API_ENV) as (ours_url, ours_proc), m.scratch_topic(f"bench-peer-{run}") as topic, \
            m.fastapi_peer(topic) as (peer_url, peer_proc):  # fmt: skip
        procs = {"ours": ours_proc, "fastapi": peer_proc}
        hit = m._cached_resource(ours_url, bearer)
        forget.append(hit)
        body = {"device_id": f"bench-peer-{run}", "payload": {"status": "online", "temp_c": 37.2}}
        forget.append(body["device_id"])
        for url in (ours_url, peer_url):  # warm both (connections, JIT-free caches)
            m.wrk_run(f"{url}/resource/{hit}", 8, 1, auth)
            m.wrk_run(f"{url}/events", 8, 1, auth, body)
        for round_ in range(rounds):
            for name, url in (("ours", ours_url), ("fastapi", peer_url)) if round_ % 2 == 0 else \
                    (("fastapi", peer_url), ("ours", ours_url)):  # fmt: skip
                result: dict = {"get": {}, "post": {}, "cpu_ms": {}}
                for path, target, payload in (("get", f"{url}/resource/{hit}", None), ("post", f"{url}/events", body)):
                    cpu = cpu_seconds_of_children(procs[name].pid)
                    for c in (8, 32, 128):
                        result[path][c] = m.wrk_run(target, c, seconds, auth, payload)
                    served = sum(r["rate"] for r in result[path].values()) * seconds
                    result["cpu_ms"][path] = (cpu_seconds_of_children(procs[name].pid) - cpu) * 1000 / served
                prefix = f"bench-peer-{run}-{name}-{round_}"
                forget.extend(f"{prefix}-{i}" for i in range(1000))
                result["mixed"] = m.open_loop(url, auth, hit, 500, max(seconds * 2, 10), prefix)
                out[name].append(result)
                get_best = max(r["rate"] for r in result["get"].values())
                post_best = max(r["rate"] for r in result["post"].values())
                say(
                    f"peer round {round_} {name}: CPU ms per GET {result['cpu_ms']['get']:.2f}, per POST "
                    f"{result['cpu_ms']['post']:.2f}"
                )
                say(f"peer round {round_} {name}: GET best {get_best:.0f}, POST best {post_best:.0f}, GET p99 c128 "
                      f"{result['get'][128]['p99_ms']} ms, mixed GET p99 {result['mixed']['get']['p99_ms']:.1f} ms, "
                      f"POST p99 {result['mixed']['post']['p99_ms']:.1f} ms")  # fmt: skip
    forget_resource(*forget)
    DETAILS["peer"] = out
    DETAILS.setdefault("post_max_rate", max(max(r["rate"] for r in res["post"].values()) for res in out["ours"]))

    def best(name: str, path: str) -> list[float]:
        return [max(r["rate"] for r in res[path].values()) for res in out[name]]

    def rng(values: list[float]) -> str:
        return f"{min(values):,.0f}-{max(values):,.0f}" if len(values) > 1 else f"{values[0]:,.0f}"

    for path, label, goal in (("get", "GET cache hit", 1.0), ("post", "POST /events", 0.8)):
        ours, peer = best("ours", path), best("fastapi", path)
        ratios = [o / p for o, p in zip(ours, peer, strict=True)]
        ROWS.append(Row(f"{label}, best req/s (wrk c=8/32/128; ours {rng(ours)}, peer {rng(peer)}; "
                            f"ratios {min(ratios):.2f}-{max(ratios):.2f}x)", max(ours), max(peer), "FastAPI stack",
                            "req/s", f">= {goal}x", min(ratios) >= goal))  # fmt: skip
    for path in ("get", "post"):
        ours_cpu = [r["cpu_ms"][path] for r in out["ours"]]
        peer_cpu = [r["cpu_ms"][path] for r in out["fastapi"]]
        ROWS.append(Row(f"CPU ms per {path.upper()} (server processes, during wrk; worst round)", max(ours_cpu),
                            max(peer_cpu), "FastAPI stack", "ms"))  # fmt: skip
    p128 = [r["get"][128]["p99_ms"] for r in out["ours"]], [r["get"][128]["p99_ms"] for r in out["fastapi"]]
    ROWS.append(Row("GET cache hit, p99 at 128 connections (worst round), ms", max(p128[0]), max(p128[1]),
                        "FastAPI stack", "ms", "no worse", max(p128[0]) <= max(p128[1])))  # fmt: skip
    mixed = [r["mixed"]["get"]["p99_ms"] for r in out["ours"]], [r["mixed"]["get"]["p99_ms"] for r in out["fastapi"]]
    ROWS.append(Row("GET p99 at 800 GET/s + 500 POST/s, API alone (worst round), ms", max(mixed[0]),
                        max(mixed[1]), "FastAPI stack", "ms", "<= 15 ms and no worse",
                        max(mixed[0]) <= 15 and max(mixed[0]) <= max(mixed[1])))  # fmt: skip
    posts = [r["mixed"]["post"]["p99_ms"] for r in out["ours"]], [r["mixed"]["post"]["p99_ms"] for r in out["fastapi"]]
    ROWS.append(Row("  POST p99 in that mix (worst round), ms", max(posts[0]), max(posts[1]), "FastAPI stack",
                        "ms"))  # fmt: skip
