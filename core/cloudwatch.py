"""Publish consumer-group lag to Amazon CloudWatch, the metric ECS target-tracking scales on.

Metrics (namespace ``CLOUDWATCH_NAMESPACE``, ``DeviceBackend/Kafka`` by default; unit Count):

* ``ConsumerLag`` with dimension ``ConsumerGroup``: total lag of the group over its topics
  (the worker service's scaling policy tracks this one);
* ``PartitionLag`` with dimensions ``ConsumerGroup``, ``Topic``, ``Partition``;
* ``OldestUnprocessedAge`` (Seconds) with dimension ``ConsumerGroup``: how long the oldest
  record the group has not processed has been waiting;
* ``DeadLetters`` with dimension ``Topic``: records in the dead-letter topic.

:func:`alarm_definitions` and :func:`dashboard_body` are what ``deploy/cloudwatch/create_alarms.py``
puts into CloudWatch: alarms on a growing dead-letter topic, an old backlog, and the worker
service at its maximum task count while lag still rises.
"""

from __future__ import annotations

import json
from typing import Any

from core.settings import Settings

DEFAULT_NAMESPACE: str = Settings.cloudwatch_namespace


def lag_metric_data(report: dict[str, Any]) -> list[dict[str, Any]]:
    """CloudWatch ``MetricData`` entries for one lag report (see ``broker.brokers.kafka.admin.consumer_lag``)."""
    group = report["group"]
    data = [
        {
            "MetricName": "ConsumerLag",
            "Dimensions": [{"Name": "ConsumerGroup", "Value": group}],
            "Value": float(report["total_lag"]),
            "Unit": "Count",
        }
    ]
    if report.get("oldest_age_s") is not None:
        data.append(
            {
                "MetricName": "OldestUnprocessedAge",
                "Dimensions": [{"Name": "ConsumerGroup", "Value": group}],
                "Value": float(report["oldest_age_s"]),
                "Unit": "Seconds",
            }
        )
    for topic, count in (report.get("dead_letters") or {}).items():
        data.append(
            {
                "MetricName": "DeadLetters",
                "Dimensions": [{"Name": "Topic", "Value": topic}],
                "Value": float(count),
                "Unit": "Count",
            }
        )
    for p in report["partitions"]:
        data.append(
            {
                "MetricName": "PartitionLag",
                "Dimensions": [
                    {"Name": "ConsumerGroup", "Value": group},
                    {"Name": "Topic", "Value": p["topic"]},
                    {"Name": "Partition", "Value": str(p["partition"])},
                ],
                "Value": float(p["lag"]),
                "Unit": "Count",
            }
        )
    return data


def publish_lag(report: dict[str, Any], namespace: str = DEFAULT_NAMESPACE, client: Any = None) -> int:
    """Send ``report`` with ``put_metric_data`` (in chunks CloudWatch accepts); returns the count.

    ``client`` defaults to ``boto3.client("cloudwatch")``, configured the usual AWS way
    (task role, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` ...).
    """
    if client is None:
        import boto3

        client = boto3.client("cloudwatch")
    data = lag_metric_data(report)
    for start in range(0, len(data), 500):
        client.put_metric_data(Namespace=namespace, MetricData=data[start : start + 500])
    return len(data)


def alarm_definitions(
    *,
    namespace: str = DEFAULT_NAMESPACE,
    group: str,
    dlq_topic: str,
    cluster: str,
    service: str,
    max_tasks: int,
    max_age_minutes: int = 10,
    actions: list[str] | None = None,
) -> list[dict[str, Any]]:
    """``put_metric_alarm`` arguments for the three alarms an operator is paged by.

    * dead letters growing: the topic's record count rose within 5 minutes (any new dead letter);
    * backlog too old: the oldest unprocessed record waited over ``max_age_minutes`` for 2
      periods of a minute (lag alone is no alarm: a burst is fine if it drains);
    * scaled out and still behind: the worker service runs ``max_tasks`` tasks (Container
      Insights' ``RunningTaskCount``) and the lag rose over each of the last 3 periods of 5 minutes.
    """
    notify = {"AlarmActions": actions or [], "OKActions": actions or []}

    def metric(ns: str, name: str, **dimensions: str) -> dict[str, Any]:
        pairs = [{"Name": k, "Value": v} for k, v in dimensions.items()]
        return {"Namespace": ns, "MetricName": name, "Dimensions": pairs}

    lag = metric(namespace, "ConsumerLag", ConsumerGroup=group)
    tasks = metric("ECS/ContainerInsights", "RunningTaskCount", ClusterName=cluster, ServiceName=service)
    dead = metric(namespace, "DeadLetters", Topic=dlq_topic)
    return [
        {
            "AlarmName": f"{group}-dead-letters-growing",
            "AlarmDescription": f"New dead letters in {dlq_topic}: `worker.py dlq list` says why, "
            "`worker.py dlq replay` once the cause is fixed.",
            "Metrics": [
                {"Id": "dlq", "MetricStat": {"Metric": dead, "Period": 300, "Stat": "Maximum"}, "ReturnData": False},
                {"Id": "growth", "Expression": "DIFF(dlq)", "Label": "new dead letters", "ReturnData": True},
            ],
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 0,
            "EvaluationPeriods": 1,
            "TreatMissingData": "notBreaching",
            **notify,
        },
        {
            "AlarmName": f"{group}-backlog-too-old",
            "AlarmDescription": f"The oldest unprocessed event of {group} waited over {max_age_minutes} minutes: "
            "a stuck partition (`worker.py status`, `worker.py skip`) or too few workers.",
            "Namespace": namespace,
            "MetricName": "OldestUnprocessedAge",
            "Dimensions": [{"Name": "ConsumerGroup", "Value": group}],
            "Statistic": "Maximum",
            "Period": 60,
            "EvaluationPeriods": 2,
            "Threshold": max_age_minutes * 60,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "breaching",  # the lag publisher itself stopped: look
            **notify,
        },
        {
            "AlarmName": f"{group}-at-max-tasks-and-lag-rising",
            "AlarmDescription": f"{service} runs its maximum of {max_tasks} tasks and the lag still rises: "
            "raise the maximum, or find what slows the workers (PostgreSQL?).",
            "Metrics": [
                {"Id": "lag", "MetricStat": {"Metric": lag, "Period": 300, "Stat": "Maximum"}, "ReturnData": False},
                {"Id": "tasks", "MetricStat": {"Metric": tasks, "Period": 300, "Stat": "Maximum"}, "ReturnData": False},
                {
                    "Id": "stuck",
                    "Expression": f"IF(tasks >= {max_tasks} AND DIFF(lag) > 0, 1, 0)",
                    "Label": "at max tasks, lag rising",
                    "ReturnData": True,
                },
            ],
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Threshold": 1,
            "EvaluationPeriods": 3,
            "TreatMissingData": "notBreaching",
            **notify,
        },
    ]


def dashboard_body(*, namespace: str = DEFAULT_NAMESPACE, group: str, dlq_topic: str, cluster: str,
                   service: str, region: str) -> dict[str, Any]:  # fmt: skip
    """A CloudWatch dashboard: lag, backlog age, dead letters and worker tasks, one graph each."""

    def graph(title: str, metric: list[Any], x: int, y: int) -> dict[str, Any]:
        return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6,
                "properties": {"title": title, "region": region, "stat": "Maximum", "period": 60,
                               "view": "timeSeries", "metrics": [metric]}}  # fmt: skip

    return {
        "widgets": [
            graph("Consumer lag", [namespace, "ConsumerLag", "ConsumerGroup", group], 0, 0),
            graph("Oldest unprocessed event (s)", [namespace, "OldestUnprocessedAge", "ConsumerGroup", group], 12, 0),
            graph("Dead letters", [namespace, "DeadLetters", "Topic", dlq_topic], 0, 6),
            graph(
                "Worker tasks",
                ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", cluster, "ServiceName", service],
                12,
                6,
            ),
        ]
    }


def create_alarms(client: Any, *, dashboard_name: str, region: str, **names: Any) -> list[str]:
    """Put the alarms and the dashboard (both idempotent: put replaces); returns the alarm names."""
    alarms = alarm_definitions(**names)
    for alarm in alarms:
        client.put_metric_alarm(**alarm)
    dashboard_names = {k: v for k, v in names.items() if k in ("namespace", "group", "dlq_topic", "cluster", "service")}
    client.put_dashboard(DashboardName=dashboard_name,
                         DashboardBody=json.dumps(dashboard_body(region=region, **dashboard_names)))  # fmt: skip
    return [a["AlarmName"] for a in alarms]
