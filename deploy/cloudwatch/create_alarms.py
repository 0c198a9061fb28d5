"""Create (or update) the CloudWatch alarms and dashboard for one deployment.

    python deploy/cloudwatch/create_alarms.py --cluster device-backend --service worker-service \\
        --max-tasks 10 --sns-topic arn:aws:sns:eu-west-1:123456789012:oncall

Alarms (core/cloudwatch.py says exactly what each watches): new dead letters, the oldest
unprocessed event waiting over --max-age-minutes, and the worker service at --max-tasks with the
lag still rising. They read the metrics `worker.py lag --publish cloudwatch --interval 60`
publishes (ConsumerLag, OldestUnprocessedAge, DeadLetters) and Container Insights'
RunningTaskCount. AWS credentials and region come the usual boto3 way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.cloudwatch import DEFAULT_NAMESPACE, create_alarms


def main(argv: list[str] | None = None, client: object = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cluster", required=True, help="the ECS cluster")
    parser.add_argument("--service", default="worker-service", help="the worker's ECS service")
    parser.add_argument("--max-tasks", type=int, required=True, help="the worker service's maximum task count")
    parser.add_argument("--group", default="events-processor", help="the consumer group (KAFKA_CONSUMER_GROUP)")
    parser.add_argument("--dlq-topic", default="events-dlq", help="the dead-letter topic (KAFKA_TOPIC_DLQ)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="CLOUDWATCH_NAMESPACE of the lag publisher")
    parser.add_argument("--max-age-minutes", type=int, default=10)
    parser.add_argument("--sns-topic", action="append", default=[], help="notify this SNS topic (repeatable)")
    parser.add_argument("--dashboard", default="device-backend")
    args = parser.parse_args(argv)
    if client is None:
        import boto3

        client = boto3.client("cloudwatch")
    region = getattr(getattr(client, "meta", None), "region_name", None) or "us-east-1"
    names = create_alarms(
        client, dashboard_name=args.dashboard, region=region, namespace=args.namespace, group=args.group,
        dlq_topic=args.dlq_topic, cluster=args.cluster, service=args.service, max_tasks=args.max_tasks,
        max_age_minutes=args.max_age_minutes, actions=args.sns_topic,
    )  # fmt: skip
    print(json.dumps({"alarms": names, "dashboard": args.dashboard}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
