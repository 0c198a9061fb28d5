"""Structured JSON logs on stdout, one object per line (what CloudWatch and ECS expect)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"  # the pid tells processes apart
_RENAMED = {"asctime": "ts", "levelname": "level", "name": "logger", "process": "pid"}


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records to stdout as JSON. Safe to call more than once."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            _FORMAT, rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "process": "pid"}
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python is chatty at INFO (every connection and group event).
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
