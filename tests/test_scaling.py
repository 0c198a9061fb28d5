"""The worker scaling policy: the target-tracking model on its own (fast), and acted out with
real ``worker.py`` processes under a load ramp (``tests/scaling/simulator.py``, about 2.5 minutes)."""

from __future__ import annotations

import os

import pytest

from tests.scaling.target_tracking import TargetTracking


def policy(**options) -> TargetTracking:
    return TargetTracking(
        **{"target": 5000, "minimum": 1, "maximum": 6, "scale_out_cooldown_s": 60, "scale_in_cooldown_s": 300,
           **options}
    )  # fmt: skip


def feed(rule: TargetTracking, capacity: int, metrics: list[float | None], start: float = 0, step: float = 60):
    """Feed one datapoint a period; returns the capacities after each."""
    out = []
    for i, metric in enumerate(metrics):
        capacity = rule.datapoint(start + i * step, capacity, metric)
        out.append(capacity)
    return out


def test_the_model_reads_the_policy_files_and_divides_time_only():
    rule = TargetTracking.from_policy_files(time_factor=10)
    assert (rule.target, rule.minimum, rule.maximum) == (5000, 1, 6)
    assert (rule.scale_out_cooldown_s, rule.scale_in_cooldown_s, rule.period_s) == (6, 30, 6)


def test_scale_out_needs_three_datapoints_above_the_target_then_jumps_to_what_the_metric_asks():
    assert feed(policy(), 1, [12_000, 12_000, 12_000]) == [1, 1, 3]  # ceil(1 x 12,000 / 5,000)
    assert feed(policy(), 1, [12_000, 4_000, 12_000, 12_000]) == [1, 1, 1, 1]  # not 3 in a row
    assert feed(policy(), 1, [90_000] * 3) == [1, 1, 6]  # the maximum


def test_during_the_scale_out_cooldown_the_capacity_just_added_is_not_counted_twice():
    rule = policy()  # cooldown 60 s, datapoints every 10 s here
    assert feed(rule, 1, [12_000] * 3, step=10) == [1, 1, 3]  # at t=20: 1 -> 3
    assert rule.datapoint(30, 3, 9_000) == 3  # ceil(1 x 9,000 / 5,000) = 2: the 3 already cover it
    assert rule.datapoint(40, 3, 16_000) == 4  # ceil(1 x 16,000 / 5,000) = 4: more than added
    assert rule.datapoint(90, 4, 6_000) == 5  # after the cooldown: ceil(4 x 6,000 / 5,000)


def test_scale_in_needs_fifteen_datapoints_under_ninety_percent_and_waits_its_cooldown():
    rule = policy()
    capacities = feed(rule, 4, [1_000] * 15)
    assert capacities[:14] == [4] * 14 and capacities[14] == 1  # ceil(4 x 1,000 / 5,000) = 1
    rule = policy()
    assert feed(rule, 4, [4_000] * 15)[-1] == 4  # 4,000 < 4,500: low, but ceil(4 x 0.8) = 4
    rule = policy()
    feed(rule, 6, [2_000] * 15)  # -> 3
    assert rule.datapoint(15 * 60, 3, 1_000) == 3  # inside the 300 s scale-in cooldown
    assert rule.datapoint(15 * 60 + 300, 3, 1_000) == 1


def test_no_data_scales_nothing():
    assert feed(policy(), 3, [None] * 20) == [3] * 20
    assert feed(policy(), 3, [0] * 14 + [None] + [0])[-1] == 3  # a gap breaks the 15 in a row


@pytest.mark.stack
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SKIP_SCALING_RAMP") == "1", reason="SKIP_SCALING_RAMP=1")
def test_the_ecs_policy_keeps_up_with_a_load_ramp_with_real_worker_processes(settings, tmp_path):
    from tests.scaling.run import SHORT
    from tests.scaling.simulator import run

    factor, steps = SHORT
    report = run(settings, steps, time_factor=factor, logs=tmp_path)
    assert report.ok, f"{report.line()}; {report.problems}"
    assert report.sent > 0 and report.lost == 0 and report.duplicates <= max(10, report.sent // 1000)
    assert any(e["to"] > e["from"] for e in report.scale_events), "scaled out for the burst"
    assert any(e["to"] < e["from"] for e in report.scale_events), "scaled back in"
