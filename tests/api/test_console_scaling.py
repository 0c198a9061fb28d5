"""The console's overview charts the worker processes beside the lag and marks each change (issue 24)."""

from __future__ import annotations

from app.admin.charts import line_chart
from app.admin.data import worker_series


class Reader:
    """A TelemetryReader's ``lag()`` with given samples (None: a bucket nobody sampled)."""

    def __init__(self, counts):
        self.counts = counts

    def lag(self):
        buckets = [1000 + 10 * i for i in range(len(self.counts))]
        return buckets, [None if c is None else {"total_lag": 0, "workers": c} for c in self.counts]


def test_scaling_events_are_the_buckets_where_the_process_count_changed():
    counts, events = worker_series(Reader([2, 2, None, 3, 3, 1, None]))
    assert counts == [2, 2, None, 3, 3, 1, None]
    assert events == [{"index": 3, "at": 1030, "from": 2, "to": 3}, {"index": 5, "at": 1050, "from": 3, "to": 1}]
    assert worker_series(Reader([None, 1, 1]))[1] == []  # the first sample is not an event


def test_samples_from_before_the_count_was_sampled_are_gaps():
    class Old(Reader):
        def lag(self):
            return [0, 10], [{"total_lag": 5}, {"total_lag": 5, "workers": 2}]

    assert worker_series(Old([])) == ([None, 2], [])


def test_the_chart_marks_each_event_with_a_vertical_line():
    chart = str(line_chart([1, 1, 2, 2], label="worker processes", marks=[2]))
    assert chart.count('<line class="mark"') == 1 and "worker processes: now 2" in chart
    assert '<line class="mark"' not in str(line_chart([1, 2], label="x"))
