"""Small test helpers: waiting on conditions with a deadline (never a bare sleep)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, message: str = "") -> T:
    """Return the first truthy value of ``condition()``, or fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {message or condition}")
        time.sleep(interval)


ROOT = Path(__file__).resolve().parents[1]


def git_status() -> set[str] | None:
    """``git status --porcelain`` lines of the checkout (None outside a git work tree)."""
    result = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True, text=True
    )
    return set(result.stdout.splitlines()) if result.returncode == 0 else None
