"""The configuration tables (``docs/configuration.md``, linked from the README) tell the truth:
every setting is documented with its real default, every documented setting exists, and every
process variable is read by something."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from core.settings import ENV_VARIABLES, Settings
from tests.test_deploy_files import PROCESS_VARIABLES

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|([^|]*)\|")


def _table_after(heading: str) -> dict[str, str]:
    """``{variable: default}`` of the first Markdown table after ``heading`` in the configuration page."""
    text = PAGE.read_text()
    lines = text[text.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variable |"))
    rows: dict[str, str] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        match = ROW.match(line)
        assert match, f"{PAGE.name} row not in the form | `VARIABLE` | default | ...: {line!r}"
        rows[match.group(1)] = match.group(2).strip().strip("`")
    return rows


SETTINGS_TABLE = _table_after("# Configuration")
PROCESS_TABLE = _table_after("Read by the processes and scripts")


def test_every_setting_is_documented_and_every_documented_setting_exists():
    assert sorted(set(ENV_VARIABLES) - set(SETTINGS_TABLE)) == [], "settings missing from docs/configuration.md"
    assert sorted(set(SETTINGS_TABLE) - set(ENV_VARIABLES)) == [], "docs/configuration.md rows that no setting reads"


@pytest.mark.parametrize("field", dataclasses.fields(Settings), ids=lambda f: f.name.upper())
def test_the_documented_default_is_the_real_one(field):
    default = field.default
    expected = "" if default in (None, "") else str(default)
    assert SETTINGS_TABLE[field.name.upper()] == expected


def test_process_variables_are_documented_apart_and_each_is_read_by_something():
    assert not set(PROCESS_TABLE) & set(ENV_VARIABLES)
    assert set(PROCESS_TABLE) >= PROCESS_VARIABLES
    readers = [ROOT / name for name in ("gunicorn.conf.py", "core/gunicorn_worker.py", "app/metrics.py",
                                        "scripts/stack", "scripts/run")]  # fmt: skip
    sources = "\n".join(path.read_text() for path in readers)
    for variable in PROCESS_TABLE:
        assert re.search(rf"\b{variable}\b", sources), f"{variable} is documented but nothing reads it"
