"""Module attributes loaded on first use (PEP 562), for a package's face: ``import broker`` must
not import kafka-python or prometheus_client, yet ``from broker import KafkaBroker`` keeps working."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_attributes(module: str, sources: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``module`` that imports each name of ``sources`` from the
    module named beside it the first time it is asked for, then keeps it as a plain attribute."""

    def __getattr__(name: str) -> Any:
        if name not in sources:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(sources[name]), name)
        setattr(sys.modules[module], name, value)
        return value

    return __getattr__
