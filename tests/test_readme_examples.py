"""The examples marked ```` ```python runnable ```` in the README and the pages under ``docs/``
(the task guide holds most) run as written, each in its own interpreter (they set a global
broker), on the StubBroker."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

BLOCK = re.compile(r"^```python runnable\n(.*?)^```", re.MULTILINE | re.DOTALL)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FOUND = [(page.relative_to(ROOT), code) for page in PAGES for code in BLOCK.findall(page.read_text())]
EXAMPLES = [code for _, code in FOUND]
IDS = [f"{page}-{n}" for n, (page, _) in enumerate(FOUND)]


def test_the_docs_have_runnable_examples_for_the_toolbox():
    text = "\n".join(EXAMPLES)
    for name in ("delay=", "ordered=False", "pipeline(", "group(", "periodic="):
        assert name in text, f"no runnable example in the README or docs/ uses {name}"


def test_the_readme_has_a_runnable_task():
    assert any(page == Path("README.md") for page, _ in FOUND), "the README's task in ten lines is not runnable"


@pytest.mark.parametrize("code", EXAMPLES, ids=IDS)
def test_an_example_runs(code):
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
