"""The clients that task functions use in this process (engine, cache), set by the entry point.

Tasks run inside the worker, which has no request context to carry them: ``worker.py`` builds
:class:`~core.wiring.Clients` once per process (never at import time) and hands them over here.
"""

from __future__ import annotations

from core.wiring import Clients

_clients: Clients | None = None


def configure(clients: Clients) -> Clients:
    """Make ``clients`` the ones tasks use in this process (call after any fork)."""
    global _clients
    _clients = clients
    return clients


def clients() -> Clients:
    """The clients :func:`configure` handed over in this process."""
    if _clients is None:
        raise RuntimeError("core.runtime.configure(clients) was not called in this process")
    return _clients
