"""The README's examples marked ```` ```python runnable ```` run as written, each in its own
interpreter (they set a global broker), on the StubBroker."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

BLOCK = re.compile(r"^```python runnable\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXAMPLES = BLOCK.findall((ROOT / "README.md").read_text())


def test_the_readme_has_runnable_examples_for_the_toolbox():
    text = "\n".join(EXAMPLES)
    for name in ("delay=", "ordered=False", "pipeline(", "group(", "periodic="):
        assert name in text, f"no runnable README example uses {name}"


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example-{n}" for n in range(len(EXAMPLES))])
def test_a_readme_example_runs(code):
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
