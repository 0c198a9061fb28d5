"""The suite writes nothing into the checkout: servers, metrics and logs live under the stack's
folder or in temporary directories. Runs last (see ``tests/conftest.py``); under pytest-xdist the
controller checks instead, after every worker (``pytest_sessionfinish`` there)."""

from __future__ import annotations

import pytest

from tests.conftest import XDIST_DEFERS_CLEAN_TREE, files_written_since_start


def test_the_suite_leaves_the_working_tree_clean(request: pytest.FixtureRequest) -> None:
    if hasattr(request.config, "workerinput"):  # a pytest-xdist worker: the others may still be running
        pytest.skip(XDIST_DEFERS_CLEAN_TREE)
    written = files_written_since_start(request.config)
    if written is None:
        pytest.skip("not a git checkout")
    assert not written, f"the tests left files in the working tree: {written[:10]}"
