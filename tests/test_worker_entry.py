"""worker.py passes the application's names to the library's command line: the consumer group
comes from KAFKA_CONSUMER_GROUP, lag can be published to CloudWatch in CLOUDWATCH_NAMESPACE, and
the dead-letter replay group follows the dead-letter topic."""

from __future__ import annotations

import argparse

import pytest

import worker
from broker import cli, commands


@pytest.fixture
def captured(monkeypatch):
    seen: dict[str, argparse.Namespace] = {}

    def capture(name):
        def fake(broker_factory, args, *rest):
            seen[name] = args
            seen[name + "_rest"] = rest
            return 0

        return fake

    monkeypatch.setattr(cli, "run_worker", capture("run"))
    monkeypatch.setattr(commands, "print_lag", capture("lag"))
    return seen


def test_the_consumer_group_comes_from_the_settings(settings, captured):
    assert worker.run(settings.replace(kafka_consumer_group="billing-workers"), ["run"]) == 0
    assert captured["run"].group == "billing-workers"
    assert captured["run"].modules == ["tasks"]
    worker.run(settings.replace(kafka_consumer_group="billing-workers"), ["run", "--group", "other"])
    assert captured["run"].group == "other"  # the command line still wins


def test_lag_publishes_to_cloudwatch_with_the_configured_namespace(settings, captured, monkeypatch):
    sent = []
    monkeypatch.setattr(worker, "publish_lag", lambda report, namespace: sent.append(namespace) or 1)
    worker.run(
        settings.replace(kafka_consumer_group="g", cloudwatch_namespace="Acme/Lag"), ["lag", "--publish", "cloudwatch"]
    )
    args, (publishers,) = captured["lag"], captured["lag_rest"]
    assert args.group == "g" and args.publish == "cloudwatch"
    publishers["cloudwatch"]({"group": "g", "total_lag": 0, "partitions": []})
    assert sent == ["Acme/Lag"]


def test_an_unknown_lag_publisher_is_refused(settings, captured):
    with pytest.raises(SystemExit):
        worker.run(settings, ["lag", "--publish", "statsd"])


def test_static_member_ids_fill_in_the_host_and_the_process_index(monkeypatch):
    monkeypatch.setattr(cli.socket, "gethostname", lambda: "ip-10-0-0-7")
    assert cli.instance_id("{host}-{index}", 2) == "ip-10-0-0-7-2"
    assert cli.instance_id("billing", 0) == "billing"
    with pytest.raises(SystemExit, match=r"only \{host\} and \{index\}"):
        cli.instance_id("{task}", 0)
