"""The autoscale rule (``broker.autoscale``): out fast, in slow, never past the partitions, no flapping."""

from __future__ import annotations

import pytest

from broker.autoscale import AutoscalePolicy, parse_range


def policy(**options) -> AutoscalePolicy:
    return AutoscalePolicy(**{"minimum": 1, "maximum": 6, "target_lag": 5000, **options})


def test_a_backlog_adds_every_process_it_needs_at_once():
    assert policy().decide(0, running=1, lag=12_000) == 3  # ceil(12,000 / 5,000)
    assert policy().decide(0, running=1, lag=1_000_000) == 6  # capped at the maximum


def test_no_more_processes_than_partitions():
    assert policy().decide(0, running=1, lag=1_000_000, partitions=4) == 4
    assert policy(minimum=2).decide(0, running=2, lag=1_000_000, partitions=1) == 2  # the minimum still holds


def test_after_adding_it_waits_for_the_cooldown_before_adding_more():
    rule = policy(scale_out_cooldown_s=30)
    assert rule.decide(0, running=1, lag=12_000) == 3
    assert rule.decide(10, running=3, lag=30_000) == 3  # the new members' work is not in the lag yet
    assert rule.decide(31, running=3, lag=30_000) == 6


def test_it_removes_one_process_at_a_time_and_only_after_the_lag_stayed_low_for_the_cooldown():
    rule = policy(scale_in_cooldown_s=120)
    assert rule.decide(0, running=3, lag=0) == 3
    assert rule.decide(119, running=3, lag=0) == 3
    assert rule.decide(121, running=3, lag=0) == 2
    assert rule.decide(200, running=2, lag=0) == 2  # the cooldown counts from the last change too
    assert rule.decide(242, running=2, lag=0) == 1
    assert rule.decide(1000, running=1, lag=0) == 1  # never below the minimum


def test_a_burst_of_lag_restarts_the_scale_in_wait():
    rule = policy(scale_in_cooldown_s=120)
    rule.decide(0, running=3, lag=0)
    rule.decide(100, running=3, lag=14_000)  # not low: the wait starts over
    assert rule.decide(130, running=3, lag=0) == 3
    assert rule.decide(251, running=3, lag=0) == 2


def test_it_keeps_head_room_so_a_lag_near_a_boundary_does_not_flap():
    rule = policy(scale_in_cooldown_s=0, scale_in_ratio=0.8)
    # 4,500 fits one process by the target (5,000), but not with the 20 % head room (4,000)
    assert rule.decide(0, running=2, lag=4_500) == 2
    assert rule.decide(1, running=2, lag=3_500) == 1


def test_a_count_outside_the_range_is_brought_back_into_it():
    assert policy(minimum=2).decide(0, running=1, lag=0) == 2
    assert policy().decide(0, running=5, lag=1_000_000, partitions=3) == 3


@pytest.mark.parametrize("text", ["3", "a,b", "0,2", "3,2", "1,2,3"])
def test_the_range_is_min_comma_max(text):
    with pytest.raises(ValueError, match="--autoscale"):
        parse_range(text)
    assert parse_range("1,6") == (1, 6)


class FakeChild:
    """A child process that drains until told it exited."""

    count = 0

    def __init__(self):
        FakeChild.count += 1
        self.pid, self.returncode, self.signals = 1000 + FakeChild.count, None, []

    def poll(self):
        return self.returncode

    def send_signal(self, signum):
        self.signals.append(signum)

    def wait(self):
        return self.returncode or 0


def test_a_draining_childs_index_is_not_reused_until_it_has_exited():
    """Its static identity ({index}) would be taken twice: the new member fences the draining one."""
    from broker.supervisor import Autoscaler

    started: dict[int, FakeChild] = {}

    def spawn(index):
        started[index] = FakeChild()
        return started[index]

    scaler = Autoscaler(AutoscalePolicy(1, 3), spawn, read_lag=lambda: (0, 3))
    scaler.desired = 2
    scaler._converge()
    assert sorted(scaler.running) == [0, 1]
    scaler.desired = 1
    scaler._converge()  # index 1 gets SIGTERM and drains
    assert sorted(scaler.stopping) == [1] and started[1].signals
    scaler.desired = 2
    scaler._converge()
    assert sorted(scaler.running) == [0, 2], "index 1 is still draining"
    started[1].returncode = 0
    scaler._reap()
    scaler.desired = 3
    scaler._converge()
    assert sorted(scaler.running) == [0, 1, 2]
