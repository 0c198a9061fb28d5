"""What Dramatiq's test files import from ``tests/common.py``, for our ``broker`` (this project's
own code, copied into the run's temporary directory by ``run.py``)."""

from __future__ import annotations

import os
import platform
from contextlib import contextmanager

import pytest

from broker import Worker


@contextmanager
def worker(*args, **kwargs):
    started = Worker(*args, **kwargs)
    try:
        started.start()
        yield started
    finally:
        started.stop()


def _gevent_active() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("threading")


skip_in_ci = pytest.mark.skipif(os.getenv("GITHUB_ACTION") is not None, reason="test skipped in CI")
skip_on_windows = pytest.mark.skipif(platform.system() == "Windows", reason="test skipped on Windows")
skip_on_pypy = pytest.mark.skipif(platform.python_implementation() == "PyPy", reason="no time limits on PyPy")
skip_with_gevent = pytest.mark.skipif(_gevent_active(), reason="behaviour with gevent is different")
skip_without_gevent = pytest.mark.skipif(not _gevent_active(), reason="behaviour without gevent is different")
skip_unless_rabbit_mq = pytest.mark.skip(reason="RabbitMQ: not the in-memory broker")
RABBITMQ_CREDENTIALS = None  # only the skipped RabbitMQ tests use it
