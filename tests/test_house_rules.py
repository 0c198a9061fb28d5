"""The house rules of docs/design.md ("The house map"), checked on the code's own imports.

- ``broker/`` is a library: nothing under it imports Flask, ``app``, ``core`` or ``tasks``;
  ``tasks/`` imports neither Flask nor ``app``; ``core/`` imports neither ``app`` nor ``tasks``.
- kafka-python is imported only under ``broker/brokers/kafka/``. Tests, benchmarks and scripts
  use it directly only where they play another producer or look at Kafka as an outsider; each
  such file is named in :data:`KAFKA_OUTSIDERS` with its reason, and every other one goes
  through the library.
- ``import broker`` loads neither kafka-python nor prometheus_client (they come on first use),
  and the public names stay importable from where they always were.

The imports are read from the source (every ``import``, at any depth: inside functions and
``TYPE_CHECKING`` blocks too), so a rule is broken by an import that is written, whether or
not it runs.
"""

from __future__ import annotations

import ast
import functools
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KAFKA_PACKAGE = "broker/brokers/kafka/"
APPLICATION = ("flask", "app", "core", "tasks")
KAFKA = ("kafka",)

#: The files outside the library that may import kafka-python, and why.
KAFKA_OUTSIDERS: dict[str, str] = {
    "scripts/kafka_topics.py": "creates the stack's topics: the library declares topics but never creates them",
    "bench/mixed.py": "creates and deletes a scratch topic for one run",
    "bench/rebalance.py": "creates the run's topic",
    "bench/storage_section.py": "creates the run's topic",
    "bench/tasks_section.py": "creates the run's topics, and times a bare kafka-python producer as the baseline",
    "tests/conftest.py": "the kafka_admin fixture: creates and deletes each test's topics",
    "tests/helpers.py": "commits a new group's offsets at the topic's end, as an outside consumer would",
    "tests/broker/conftest.py": "reads a group's committed offsets and a topic's end offsets as an outsider",
    "tests/broker/test_kafka_internals.py": "checks the private names broker/brokers/kafka/internals.py needs "
    "on a real KafkaConsumer",
    "tests/broker/test_kafka_producer.py": "hands the broker a kafka-python error to see it translated",
    "tests/broker/test_kafka_errors.py": "hands the translation kafka-python errors to see what leaves the package",
    "tests/broker/test_kafka_thread_producer.py": "reads back, as an outsider, what the threaded producer wrote",
    "tests/broker/test_toolbox_processes.py": "counts the scheduler's runs on the topic as an outsider",
    "tests/broker/test_tracing.py": "reads the record the broker wrote, to see its Kafka headers",
    "tests/broker/test_worker_processes.py": "plays another producer and another group member (offsets to "
    "check the lag and skip commands against)",
    "tests/api/test_admin_console.py": "reads the topics a replay wrote to, as an outsider",
    "tests/api/test_idempotency.py": "counts the records the API wrote, as an outsider",
    "tests/api/test_outages.py": "counts the records the API wrote through an outage, as an outsider",
    "tests/chaos/harness.py": "reads the dead-letter topic as an outsider, for the verdict",
    "tests/chaos/scenarios.py": "plays a foreign producer of poison records, and finds a partition's leader",
    "tests/chaos/soak.py": "plays a foreign producer of poison records",
    "tests/scaling/simulator.py": "creates the simulation's topic",
    "tests/test_stack_smoke.py": "checks the stack's Kafka itself, without the library",
}
OUTSIDE_THE_HOUSE = ("tests/", "bench/", "scripts/")


@functools.cache
def _python_files() -> list[str]:
    """Every Python file of the project (by extension), as a path from the root; the walk never
    enters .venv, .stack, caches or node_modules (they hold most of the files below the root)."""
    files: list[str] = []
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in ("__pycache__", "node_modules")]
        relative = Path(folder).relative_to(ROOT)
        files.extend((relative / name).as_posix() for name in names if name.endswith(".py"))
    return sorted(files)


@functools.cache
def _imports(path: str) -> frozenset[str]:
    """The absolute module names ``path`` imports (``from a.b import c``: ``a.b`` and ``a.b.c``)."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(names)


def _offending(path: str, packages: tuple[str, ...]) -> list[str]:
    return sorted(n for n in _imports(path) if n.split(".")[0] in packages)


def test_the_library_imports_nothing_of_the_application():
    found = {p: _offending(p, APPLICATION) for p in _python_files() if p.startswith("broker/")}
    assert {p: names for p, names in found.items() if names} == {}


@pytest.mark.parametrize(
    ("room", "forbidden"), [("tasks/", ("flask", "app")), ("core/", ("app", "tasks"))], ids=["tasks", "core"]
)
def test_the_shared_rooms_import_nothing_above_them(room, forbidden):
    found = {p: _offending(p, forbidden) for p in _python_files() if p.startswith(room)}
    assert {p: names for p, names in found.items() if names} == {}


def test_only_the_kafka_package_imports_kafka_python():
    inside = [p for p in _python_files() if not p.startswith(OUTSIDE_THE_HOUSE) and not p.startswith(KAFKA_PACKAGE)]
    found = {p: _offending(p, KAFKA) for p in inside}
    assert {p: names for p, names in found.items() if names} == {}


def test_tests_benchmarks_and_scripts_use_kafka_python_only_as_named_outsiders():
    users = {p for p in _python_files() if p.startswith(OUTSIDE_THE_HOUSE) and _offending(p, KAFKA)}
    assert users - set(KAFKA_OUTSIDERS) == set(), "use the library, or name the file and why in KAFKA_OUTSIDERS"
    assert set(KAFKA_OUTSIDERS) - users == set(), "no longer imports kafka-python: take it off KAFKA_OUTSIDERS"


def test_the_rules_see_an_import_wherever_it_is_written():
    assert "kafka.errors" in _imports("broker/brokers/kafka/errors.py")
    assert "broker.brokers.kafka.admin.consumer_lag" in _imports("broker/cli.py")  # inside a function
    assert _offending("broker/brokers/kafka/broker.py", KAFKA)


def test_importing_broker_loads_neither_kafka_python_nor_prometheus_client():
    probe = (
        "import sys, broker, broker.middleware\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'kafka', 'prometheus_client'})\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("broker", "KafkaBroker"),
        ("broker.brokers.kafka", "KafkaBroker"),
        ("broker.brokers.kafka", "client_options"),
        ("broker.middleware", "Prometheus"),
        ("broker.admin", "consumer_lag"),
        ("broker.admin", "describe_dead_letter"),
        ("broker.worker", "Worker"),
        ("broker.worker", "DEFAULT_GROUP"),
        ("broker.worker", "QUEUE_PREFETCH"),
    ],
)
def test_a_public_name_is_still_importable_from_where_it_was(module, name):
    assert getattr(importlib.import_module(module), name) is not None


def test_a_lazy_name_is_the_class_it_names():
    import broker
    from broker.brokers.kafka.broker import KafkaBroker
    from broker.middleware.prometheus import Prometheus

    assert broker.KafkaBroker is KafkaBroker
    assert importlib.import_module("broker.middleware").Prometheus is Prometheus
    with pytest.raises(AttributeError):
        broker.NoSuchName  # noqa: B018
