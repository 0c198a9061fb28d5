"""How much of Dramatiq's own test suite passes against ``broker`` (issue 23's measurement).

    python -m scripts.dramatiq_parity.run [--source GIT_DIR_OR_URL] [--repo CHECKOUT] [--list] [--json FILE]

Obtains Dramatiq 2.2.0's test files at run time, into a temporary directory (``git archive`` of
the tag from ``--source``: a local clone or mirror, or the upstream repository, cloned shallowly),
never into this repository. Applies only the renames the task guide's "Coming from Dramatiq" table
documents (each listed in ``RENAMES`` with the table text it stands for; the run refuses to start
if that text is missing from the table), gives the files this project's own ``conftest.py`` and
``common.py`` (in-memory broker and stub backends; fixtures of other brokers and servers skip),
and runs them with pytest against the ``broker`` package of ``--repo`` (default: this checkout).

Prints, per test file, how many of its tests on the in-memory broker pass; ``--list`` names each
that does not, with the first line of its failure. A file that cannot even be imported counts
all its test functions as failing. The clock of each test is pytest's own (a 30 s cap per test).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
UPSTREAM = "https://github.com/Bogdanp/dramatiq.git"
TAG = "v2.2.0"

# The test files the issue measures (Dramatiq's paths under tests/).
FILES = [
    "test_actors.py",
    "test_broker.py",
    "test_messages.py",
    "test_stub_broker.py",
    "test_worker.py",
    "middleware/test_retries.py",
    "middleware/test_time_limit.py",
    "test_composition.py",
    "test_results.py",
    "test_barrier.py",
    "test_bucket_rate_limiter.py",
    "test_concurrent_rate_limiter.py",
    "test_window_rate_limiter.py",
    "test_callbacks.py",
    "test_generic_actors.py",
    "test_encoders.py",
    "middleware/test_asyncio.py",
    "middleware/test_shutdown.py",
]

# (pattern, replacement, the text of the docs/tasks.md table row that documents it). The package name
# itself (dramatiq -> broker) is mapped at import time by the harness's conftest, not in the text.
RENAMES = [
    (r"\bqueue_name\b", "topic", "`queue_name=`"),
    (r"\bget_declared_queues\b", "get_declared_topics", "`get_declared_topics()`"),
    (r"\bdramatiq\.brokers\.rabbitmq\b", "dramatiq.brokers.kafka", "`KafkaBroker`"),
    (r"\bRabbitmqBroker\b", "KafkaBroker", "`RabbitmqBroker`"),
]
OUT_OF_SCOPE = "not the in-memory broker"


def table_text(guide: Path) -> str:
    """The task guide's "Coming from Dramatiq" section."""
    text = guide.read_text()
    start = text.index("## Coming from Dramatiq")
    end = text.find("\n## ", start)
    return text[start : end if end > 0 else None]


def check_renames(guide: Path) -> None:
    table = table_text(guide)
    missing = [row for _, _, row in RENAMES if row not in table]
    if missing:
        sys.exit(f"renames not documented in docs/tasks.md's Dramatiq table: {', '.join(missing)}")
    if "`dramatiq`" not in table or "`broker`" not in table:
        sys.exit("docs/tasks.md's Dramatiq table does not document the package rename (`dramatiq` -> `broker`)")


def obtain(source: str, into: Path) -> None:
    """Dramatiq's tests/ at TAG, into ``into`` (a git directory, a checkout, or a URL)."""
    git_dir = source
    if not Path(source).exists():
        clone = into / "clone"
        subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", TAG, source, str(clone)], check=True)
        git_dir = str(clone)
    archive = subprocess.run(
        ["git", "--git-dir", _git_dir(git_dir), "archive", "--format=tar", TAG, "tests"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    shutil.rmtree(into / "clone", ignore_errors=True)


def _git_dir(path: str) -> str:
    p = Path(path)
    return str(p / ".git") if (p / ".git").exists() else str(p)


def prepare(into: Path) -> Path:
    """The package of test files to run: the measured files, renamed, with our conftest/common."""
    upstream = into / "tests"
    package = into / "dramatiq_tests"
    (package / "middleware").mkdir(parents=True)
    for init in ("__init__.py", "middleware/__init__.py"):
        (package / init).write_text("")
    for name in FILES:
        text = (upstream / name).read_text()
        for pattern, replacement, _ in RENAMES:
            text = re.sub(pattern, replacement, text)
        (package / name).write_text(text)
    shutil.copy(HERE / "harness_conftest.py", package / "conftest.py")
    shutil.copy(HERE / "harness_common.py", package / "common.py")
    shutil.rmtree(upstream)
    (into / "pytest.ini").write_text(
        "[pytest]\naddopts = -p no:cacheprovider\ntimeout = 30\nfilterwarnings = ignore::DeprecationWarning\n"
    )
    return package


def run(into: Path, package: Path, repo: Path) -> Path:
    junit = into / "junit.xml"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    for name in ("POSTGRES_PORT", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        env.pop(name, None)
    subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-c", str(into / "pytest.ini"), "--rootdir", str(into)),
            *("--continue-on-collection-errors", f"--junitxml={junit}", str(package)),
        ],
        cwd=into,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return junit


def count_tests(path: Path) -> int:
    tree = ast.parse(path.read_text())
    functions = (n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    return sum(1 for n in functions if n.name.startswith("test"))


def summarise(junit: Path, package: Path) -> dict:
    per_file: dict[str, Counter] = defaultdict(Counter)
    failing: list[tuple[str, str]] = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        classname = case.get("classname", "")
        name = case.get("name", "")
        if not classname:  # a module that failed to import: pytest names it by its dotted path
            file = name.replace("dramatiq_tests.", "").replace(".", "/") + ".py"
            per_file[file]["failed"] += count_tests(package / file)
            failing.append((file, "(not importable) " + _first_line(case)))
            continue
        # dramatiq_tests.middleware.test_retries -> middleware/test_retries.py
        parts = classname.split(".")[1:] or ["(harness)"]
        file = "/".join(parts[:2] if parts[0] == "middleware" else parts[:1]) + ".py"
        outcome = "passed"
        detail = ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
                detail = _first_line(case)
            elif child.tag == "skipped":
                outcome = "out_of_scope" if OUT_OF_SCOPE in (child.get("message") or "") else "skipped"
        per_file[file][outcome] += 1
        if outcome == "failed":
            failing.append((f"{file}::{name}", detail))
    totals: Counter = Counter()
    for counts in per_file.values():
        totals.update(counts)
    return {"per_file": {f: dict(c) for f, c in sorted(per_file.items())}, "totals": dict(totals), "failing": failing}


def _first_line(case: ET.Element) -> str:
    for child in case:
        if child.tag in ("failure", "error"):
            text = child.get("message") or child.text or child.tag
            lines = [line for line in text.splitlines() if line.strip()]
            errors = [line for line in lines if line.startswith("E ")]
            return (errors[-1] if errors else lines[-1] if lines else child.tag)[:200]
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=UPSTREAM, help="Dramatiq's git repository: a path or a URL")
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose broker package is tested")
    parser.add_argument("--list", action="store_true", help="name every test that does not pass")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (printed)")
    args = parser.parse_args(argv)
    check_renames(ROOT / "docs" / "tasks.md")  # the renames this checkout's table documents
    into = Path(tempfile.mkdtemp(prefix="dramatiq-parity-"))
    try:
        obtain(args.source, into)
        package = prepare(into)
        summary = summarise(run(into, package, args.repo.resolve()), package)
    finally:
        if args.keep:
            print(f"kept {into}")
        else:
            shutil.rmtree(into, ignore_errors=True)
    for file, counts in summary["per_file"].items():
        in_scope = sum(v for k, v in counts.items() if k != "out_of_scope")
        print(f"{file:40} {counts.get('passed', 0):4} of {in_scope:4} pass")
    totals = summary["totals"]
    in_scope = sum(v for k, v in totals.items() if k != "out_of_scope")
    print(
        f"{'total':40} {totals.get('passed', 0):4} of {in_scope:4} pass"
        f"  (skipped {totals.get('skipped', 0)}; other brokers, not counted: {totals.get('out_of_scope', 0)})"
    )
    if args.list:
        for test, detail in summary["failing"]:
            print(f"FAIL {test}: {detail}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
