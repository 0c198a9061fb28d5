"""The alarms and dashboard of deploy/cloudwatch/create_alarms.py, put into moto's CloudWatch
and read back (issue 13, item 4); and the metrics they watch, as the lag publisher sends them."""

from __future__ import annotations

import importlib.util
import json

import pytest

from core.cloudwatch import lag_metric_data
from tests.helpers import ROOT


@pytest.fixture
def cloudwatch(monkeypatch):
    import boto3  # boto3 and moto are imported by the two tests that use them, not at collection
    from moto import mock_aws

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "eu-west-1")):  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.client("cloudwatch", region_name="eu-west-1")


def _script():
    spec = importlib.util.spec_from_file_location("create_alarms", ROOT / "deploy" / "cloudwatch" / "create_alarms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_puts_three_alarms_and_a_dashboard(cloudwatch, capsys):
    argv = ["--cluster", "prod", "--max-tasks", "10", "--sns-topic", "arn:aws:sns:eu-west-1:123456789012:oncall"]
    assert _script().main(argv, client=cloudwatch) == 0
    printed = json.loads(capsys.readouterr().out)
    alarms = {a["AlarmName"]: a for a in cloudwatch.describe_alarms()["MetricAlarms"]}
    assert (
        set(alarms)
        == set(printed["alarms"])
        == {
            "events-processor-dead-letters-growing",
            "events-processor-backlog-too-old",
            "events-processor-at-max-tasks-and-lag-rising",
        }
    )
    old = alarms["events-processor-backlog-too-old"]
    assert (old["MetricName"], old["Threshold"], old["EvaluationPeriods"]) == ("OldestUnprocessedAge", 600, 2)
    assert old["AlarmActions"] == ["arn:aws:sns:eu-west-1:123456789012:oncall"]
    dead = alarms["events-processor-dead-letters-growing"]
    assert any(m.get("Expression") == "DIFF(dlq)" for m in dead["Metrics"])
    stuck = alarms["events-processor-at-max-tasks-and-lag-rising"]
    assert any(m.get("Expression") == "IF(tasks >= 10 AND DIFF(lag) > 0, 1, 0)" for m in stuck["Metrics"])
    body = json.loads(cloudwatch.get_dashboard(DashboardName="device-backend")["DashboardBody"])
    titles = [w["properties"]["title"] for w in body["widgets"]]
    assert titles == ["Consumer lag", "Oldest unprocessed event (s)", "Dead letters", "Worker tasks"]


def test_running_it_again_updates_instead_of_duplicating(cloudwatch):
    script = _script()
    script.main(["--cluster", "prod", "--max-tasks", "10"], client=cloudwatch)
    script.main(["--cluster", "prod", "--max-tasks", "20", "--max-age-minutes", "5"], client=cloudwatch)
    alarms = cloudwatch.describe_alarms()["MetricAlarms"]
    assert len(alarms) == 3
    old = next(a for a in alarms if a["AlarmName"].endswith("backlog-too-old"))
    assert old["Threshold"] == 300


def test_the_lag_publisher_sends_what_the_alarms_watch():
    report = {"group": "events-processor", "total_lag": 5, "partitions": [], "oldest_age_s": 42.5,
              "dead_letters": {"events-dlq": 3}}  # fmt: skip
    data = {d["MetricName"]: d for d in lag_metric_data(report)}
    assert data["OldestUnprocessedAge"]["Value"] == 42.5 and data["OldestUnprocessedAge"]["Unit"] == "Seconds"
    assert data["DeadLetters"]["Dimensions"] == [{"Name": "Topic", "Value": "events-dlq"}]
    assert data["DeadLetters"]["Value"] == 3.0
