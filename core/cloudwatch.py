"""Publish consumer-group lag to Amazon CloudWatch, the metric ECS target-tracking scales on.

Metrics (namespace ``CLOUDWATCH_NAMESPACE``, ``DeviceBackend/Kafka`` by default; unit Count):

* ``ConsumerLag`` with dimension ``ConsumerGroup``: total lag of the group over its topics
  (the worker service's scaling policy tracks this one);
* ``PartitionLag`` with dimensions ``ConsumerGroup``, ``Topic``, ``Partition``.
"""

from __future__ import annotations

from typing import Any

from core.settings import Settings

DEFAULT_NAMESPACE: str = Settings.cloudwatch_namespace


def lag_metric_data(report: dict[str, Any]) -> list[dict[str, Any]]:
    """CloudWatch ``MetricData`` entries for one lag report (see ``broker.admin.consumer_lag``)."""
    group = report["group"]
    data = [
        {
            "MetricName": "ConsumerLag",
            "Dimensions": [{"Name": "ConsumerGroup", "Value": group}],
            "Value": float(report["total_lag"]),
            "Unit": "Count",
        }
    ]
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
