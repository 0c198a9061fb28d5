"""The soak's verdict on growth (``tests/chaos/soak.py``): what counts as a leak and what does not."""

from __future__ import annotations

from tests.chaos.soak import Sample, SoakReport, check_growth


def sample(t: float, processes: dict, keys: int = 50, connections: int = 10) -> Sample:
    return Sample(t, processes, redis_mb=2.0, redis_keys=keys, pg_connections=connections, lag=0)


def verdict(samples: list[Sample], warm_up_s: float = 60) -> list[str]:
    report = SoakReport(minutes=10, post_rate=100, get_rate=200, warm_up_s=warm_up_s)
    check_growth(report, samples, warm_up_s)
    return report.problems


def test_growth_during_the_warm_up_is_not_a_leak_and_steady_figures_pass():
    samples = [sample(0, {"api:1": {"rss_mb": 50, "fds": 10}}),
               sample(60, {"api:1": {"rss_mb": 120, "fds": 40}}),
               sample(600, {"api:1": {"rss_mb": 125, "fds": 41}})]  # fmt: skip
    assert verdict(samples) == []


def test_memory_descriptors_keys_and_connections_that_keep_growing_fail():
    samples = [sample(0, {"api:1": {"rss_mb": 50, "fds": 10}}),
               sample(60, {"api:1": {"rss_mb": 120, "fds": 40}}),
               sample(600, {"api:1": {"rss_mb": 200, "fds": 60}}, keys=500, connections=30)]  # fmt: skip
    problems = verdict(samples)
    assert any("RSS 120 -> 200" in p for p in problems) and any("descriptors 40 -> 60" in p for p in problems)
    assert any("Redis keys 50 -> 500" in p for p in problems) and any("connections 10 -> 30" in p for p in problems)


def test_a_restarted_worker_is_judged_within_its_own_lifetime():
    first = [sample(t, {"worker:1": {"rss_mb": 90 + t / 100, "fds": 20}}) for t in range(60, 301, 60)]
    second = [sample(t, {"worker:2": {"rss_mb": 60, "fds": 18}}) for t in range(330, 601, 60)]  # after a restart
    report = SoakReport(minutes=10, post_rate=100, get_rate=200, warm_up_s=60)
    check_growth(report, first + second, 60)
    assert report.problems == []  # 60 MB after 93 MB is a new process, not a shrink or a leak
    assert set(report.growth) >= {"worker:1", "worker:2"}
    leaking = [sample(t, {"worker:3": {"rss_mb": 60 + t / 4, "fds": 18}}) for t in range(60, 601, 60)]
    assert any("worker:3: RSS" in p for p in verdict(leaking))
