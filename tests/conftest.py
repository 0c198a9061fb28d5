"""Shared fixtures and the two test tiers.

Tests that talk to the real local stack (``scripts/stack up``) carry the ``stack`` marker: it is
added here to every test that uses a fixture reaching a server (``STACK_FIXTURES``), and set by
hand (``pytestmark``) on modules that start servers or processes. ``make test-fast`` runs the
rest (``-m "not stack"``) with every server address pointing at a closed port, so a test that
silently needs a server fails there instead of passing because the stack happened to run.
Stack tests get their own Kafka topic, consumer group, database rows or Redis keys, so tests do
not see each other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from core.settings import Settings, load_settings

if TYPE_CHECKING:  # the clients are imported by the fixtures that make them: every pytest process,
    # pytest-xdist's controller included, loads this file, and most tests need none of them
    import redis
    from kafka import KafkaAdminClient
    from sqlalchemy import Engine

TEST_DEFAULTS = {
    "APP_ENV": "test",
    "JWT_SECRET": "local-dev-secret",
    "POSTGRES_PASSWORD": "apppass",
    "LOG_LEVEL": "WARNING",
    "RATE_LIMIT_EVENTS": "100000/second",  # tests post fast from one subject; the limit has its own tests
    "RATE_LIMIT_REFUSED": "100000/second",  # every test client is 127.0.0.1, and many tests are refused on purpose
    "ADMIN_SIGN_IN_PER_MINUTE": "100000",  # every test client signs in from 127.0.0.1; the throttle has its own test
}


# Fixtures that reach PostgreSQL, Redis or Kafka: a test using any of them is a stack test.
STACK_FIXTURES = frozenset(
    {"kafka_admin", "make_topic", "db_engine", "redis_client", "task_runtime", "live", "proc_env", "sasl_environ"}
)
CLEAN_TREE_TEST = "test_the_suite_leaves_the_working_tree_clean"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)
    # the clean-tree check runs last, after everything that could write into the tree
    items.sort(key=lambda item: item.name == CLEAN_TREE_TEST)


def pytest_sessionstart(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput"):  # a pytest-xdist worker: the controller checks the tree
        return
    from tests.helpers import git_status

    session.config.stash[GIT_STATUS_AT_START] = git_status()


GIT_STATUS_AT_START = pytest.StashKey[set[str] | None]()
_clean_tree_deferred: list[str] = []  # on the xdist controller: the clean-tree test a worker skipped
XDIST_DEFERS_CLEAN_TREE = "under pytest-xdist its controller checks the tree once every worker is done"


def files_written_since_start(config: pytest.Config) -> list[str] | None:
    """The paths ``git status`` shows now and did not when the session began (None outside a git
    checkout): what the tests wrote into the working tree."""
    from tests.helpers import git_status

    before = config.stash[GIT_STATUS_AT_START]
    if before is None:
        return None
    after = git_status()
    assert after is not None, "git status failed at the end of the session"
    return sorted(after - before)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Under pytest-xdist (``make test-fast``) no test runs after all the others: a worker skips
    the clean-tree test and the controller, which sees every report, checks in its place."""
    if report.nodeid.endswith(CLEAN_TREE_TEST) and report.skipped and XDIST_DEFERS_CLEAN_TREE in str(report.longrepr):
        _clean_tree_deferred.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        _exit_without_teardown(int(session.exitstatus))
        return
    if not _clean_tree_deferred:
        return
    written = files_written_since_start(config)
    if written:
        message = f"FAILED {CLEAN_TREE_TEST}: the tests left files in the working tree: {written[:10]}"
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(message)
        else:
            print(message)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _exit_without_teardown(status: int) -> None:
    """A pytest-xdist worker has sent every report by the time its interpreter exits, and the
    controller waits for that exit: the interpreter's teardown (freeing every module and object the
    tests built) took about a second. So the worker's last atexit hook is an ``os._exit`` with the
    session's status; the hooks registered before it (logging's flush among them) do not run."""
    import atexit
    import sys

    def leave() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    atexit.register(leave)


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings for the local stack; the environment may point tests elsewhere."""
    return load_settings({**TEST_DEFAULTS, **os.environ})


@pytest.fixture
def kafka_admin(settings: Settings) -> Iterator[KafkaAdminClient]:
    """A fresh admin client per test: tests/api/test_outages.py restarts Kafka, and a client that
    saw it go is refused for a while (NodeNotReadyError) by the tests that come after."""
    from kafka import KafkaAdminClient

    from broker.brokers.kafka import client_options

    admin = KafkaAdminClient(**client_options(**settings.kafka_options), request_timeout_ms=10000)
    yield admin
    admin.close()


@pytest.fixture
def unique() -> str:
    """A short id to name this test's resources."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def make_topic(kafka_admin: KafkaAdminClient, unique: str) -> Iterator:
    """Factory for fresh topics, deleted after the test."""
    created: list[str] = []

    def make(partitions: int = 1, name: str | None = None) -> str:
        topic = name or f"test-{unique}-{len(created)}"
        kafka_admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}})
        kafka_admin.wait_for_topics([topic], timeout_ms=30000)
        created.append(topic)
        return topic

    yield make
    if created:
        kafka_admin.delete_topics(created, raise_errors=False)


@pytest.fixture
def group_id(unique: str) -> str:
    return f"test-group-{unique}"


@pytest.fixture(scope="session")
def db_engine(settings: Settings) -> Iterator[Engine]:
    from core.db import make_engine

    engine = make_engine(settings, pool_size=5)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


class Traced:
    """This process's tracing, on for one test: spans kept in memory (``finished()``)."""

    def __init__(self, provider, exporter) -> None:
        self.provider = provider
        self.exporter = exporter
        self.tracer = provider.get_tracer("tests")

    def finished(self, name: str | None = None) -> list:
        spans = self.exporter.get_finished_spans()
        return [s for s in spans if name is None or s.name == name]


@pytest.fixture
def traced() -> Iterator[Traced]:
    """Tracing on (core.tracing.use_provider) with the SDK's in-memory exporter; off again after."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from core import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield Traced(provider, exporter)
    tracing.reset()
    provider.shutdown()
