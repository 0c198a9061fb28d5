"""Fixtures for Dramatiq's test files, on our ``broker`` and its in-memory broker only.

Copied into the run's temporary directory as ``tests/conftest.py`` by ``run.py``. Written for this
project (not Dramatiq's conftest): the same fixture names, each doing what Dramatiq's does, with
the in-memory broker and the stub backends; fixtures of other brokers and servers skip. It also
maps the package name ``dramatiq`` to ``broker`` (the table's first row) at import time.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import sys

import pytest

OUT_OF_SCOPE = "not the in-memory broker: out of this measurement's scope"


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import dramatiq.x`` gives ``broker.x`` (the package rename in docs/tasks.md's table)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "dramatiq" and not fullname.startswith("dramatiq."):
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module("broker" + spec.name[len("dramatiq") :])

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Alias())

import broker  # noqa: E402
from broker import StubBroker, Worker  # noqa: E402
from broker.rate_limits import backends as rl_backends  # noqa: E402
from broker.results import backends as res_backends  # noqa: E402

logging.basicConfig(level=logging.INFO)


@pytest.fixture()
def stub_broker():
    stub = StubBroker()
    stub.emit_after("process_boot")
    broker.set_broker(stub)
    yield stub
    stub.flush_all()
    stub.close()


@pytest.fixture()
def stub_worker(stub_broker):
    worker = Worker(stub_broker, worker_timeout=100, worker_threads=32)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture()
def rabbitmq_broker():
    pytest.skip(OUT_OF_SCOPE)


@pytest.fixture()
def redis_broker():
    pytest.skip(OUT_OF_SCOPE)


@pytest.fixture()
def rabbitmq_worker():
    pytest.skip(OUT_OF_SCOPE)


@pytest.fixture()
def redis_worker():
    pytest.skip(OUT_OF_SCOPE)


@pytest.fixture
def info_logging():
    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(logging.DEBUG)


@pytest.fixture
def start_cli():
    pytest.skip(OUT_OF_SCOPE)


@pytest.fixture
def stub_rate_limiter_backend():
    return rl_backends.StubBackend()


@pytest.fixture
def rate_limiter_backends(stub_rate_limiter_backend):
    return {"stub": stub_rate_limiter_backend}


@pytest.fixture(params=["stub"])
def rate_limiter_backend(request, rate_limiter_backends):
    return rate_limiter_backends[request.param]


@pytest.fixture
def stub_result_backend():
    return res_backends.StubBackend()


@pytest.fixture
def result_backends(stub_result_backend):
    return {"stub": stub_result_backend}


@pytest.fixture(params=["stub"])
def result_backend(request, result_backends):
    return result_backends[request.param]


@pytest.fixture
def redis_result_backend():
    pytest.skip(OUT_OF_SCOPE)


@pytest.fixture
def memcached_result_backend():
    pytest.skip(OUT_OF_SCOPE)


@pytest.fixture
def redis_rate_limiter_backend():
    pytest.skip(OUT_OF_SCOPE)


@pytest.fixture
def memcached_rate_limiter_backend():
    pytest.skip(OUT_OF_SCOPE)
