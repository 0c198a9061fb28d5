"""The operator tools' old path, kept for applications that import it: the tools are
:mod:`broker.brokers.kafka.admin` (they talk to Kafka) and what a dead letter says is
:mod:`broker.dead_letters`. Importing this module imports kafka-python."""

from broker.brokers.kafka.admin import (
    SkippedByOperator,
    SkipRefused,
    consumer_lag,
    describe_group,
    oldest_unprocessed_age_s,
    purge_topic,
    read_dead_letters,
    read_records,
    recent_dead_letters,
    replay_dead_letters,
    replay_records,
    skip_record,
    topic_exists,
    topic_size,
)
from broker.dead_letters import REPLAY_HEADER, describe_dead_letter

__all__ = [
    "REPLAY_HEADER",
    "SkipRefused",
    "SkippedByOperator",
    "consumer_lag",
    "describe_dead_letter",
    "describe_group",
    "oldest_unprocessed_age_s",
    "purge_topic",
    "read_dead_letters",
    "read_records",
    "recent_dead_letters",
    "replay_dead_letters",
    "replay_records",
    "skip_record",
    "topic_exists",
    "topic_size",
]
