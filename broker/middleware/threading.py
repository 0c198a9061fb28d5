"""Dramatiq keeps its thread helpers under ``dramatiq.middleware.threading`` too: the same here."""

from broker.threading import Interrupt, current_platform, is_gevent_active, raise_thread_exception, supported_platforms

__all__ = ["Interrupt", "current_platform", "is_gevent_active", "raise_thread_exception", "supported_platforms"]
