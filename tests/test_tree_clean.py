"""The suite writes nothing into the checkout: servers, metrics and logs live under the stack's
folder or in temporary directories. Runs last (see ``tests/conftest.py``); under pytest-xdist the
controller checks instead, after every worker (``pytest_sessionfinish`` there)."""

from __future__ import annotations

import pytest

from tests.conftest import GIT_STATUS_AT_START, XDIST_DEFERS_CLEAN_TREE
from tests.helpers import git_status


def test_the_suite_leaves_the_working_tree_clean(request: pytest.FixtureRequest) -> None:
    if hasattr(request.config, "workerinput"):  # a pytest-xdist worker: the others may still be running
        pytest.skip(XDIST_DEFERS_CLEAN_TREE)
    before = request.config.stash[GIT_STATUS_AT_START]
    if before is None:
        pytest.skip("not a git checkout")
    after = git_status()
    assert after is not None
    written = sorted(after - before)
    assert not written, f"the tests left files in the working tree: {written[:10]}"
