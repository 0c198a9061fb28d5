"""Raising an exception inside another thread, as time limits and shutdown notifications do
(Dramatiq's ``dramatiq.threading`` names). It lands at the thread's next Python bytecode: a call
blocked inside C (a socket read) is interrupted only when it returns."""

from __future__ import annotations

import ctypes
import logging
import platform

from broker.errors import Interrupt

__all__ = ["Interrupt", "current_platform", "is_gevent_active", "raise_thread_exception", "supported_platforms"]

log = logging.getLogger(__name__)

current_platform = platform.python_implementation()
supported_platforms = {"CPython"}


def is_gevent_active() -> bool:
    """Whether gevent has patched threads (workers here never run under gevent; the API does)."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("threading")


def raise_thread_exception(thread_id: int, exception: type[BaseException]) -> None:
    """Raise ``exception`` in the thread ``thread_id`` (CPython only; elsewhere logged, not raised)."""
    if current_platform not in supported_platforms:
        log.critical("cannot raise an exception in another thread on %s", current_platform)
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exception))
