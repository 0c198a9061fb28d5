"""Loggers named as Dramatiq names them (``dramatiq.logging.get_logger``)."""

from __future__ import annotations

import logging


def get_logger(module: str, name: object = None) -> logging.Logger:
    """The logger ``<module>`` or ``<module>.<name>`` (a class: its name)."""
    if name is None:
        return logging.getLogger(module)
    label = name.__name__ if isinstance(name, type) else str(name)
    return logging.getLogger(f"{module}.{label}")
