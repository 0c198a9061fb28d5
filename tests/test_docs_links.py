"""Every relative link in the README and the pages under ``docs/`` leads somewhere: the file
exists and, for ``#anchor`` links, the page has a heading with that anchor. The README is a front
door whose every section is a link into ``docs/``; a page renamed or a heading reworded must not
leave a dead link behind.

Anchors follow GitHub's rule: the heading's text, lowercased, with everything but letters,
digits, spaces, ``-`` and ``_`` dropped and each space turned into ``-``; a repeated heading
gets ``-1``, ``-2``, ... in order."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from tests.helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"`+[^`]*`+")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (a link or heading inside one is code)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading's text (links inside it count by their text)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(page.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    """The relative link targets of a page, code spans and code blocks left out."""
    targets = []
    for line in prose_lines(page.read_text()):
        for target in LINK.findall(CODE_SPAN.sub("``", line)):
            if not EXTERNAL.match(target):
                targets.append(target)
    return targets


CASES = [(page, target) for page in PAGES for target in links(page)]


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("The local stack: `scripts/stack`", "the-local-stack-scriptsstack"),
        ("Retries that let the key move on: `ordered=False`", "retries-that-let-the-key-move-on-orderedfalse"),
        (
            "Reads under ingest and the FastAPI peer (issue 21), 2026-12-04",
            "reads-under-ingest-and-the-fastapi-peer-issue-21-2026-12-04",
        ),
        ("Redis: no eviction, and how to size it (ElastiCache)", "redis-no-eviction-and-how-to-size-it-elasticache"),
        ("A link: [the guide](docs/tasks.md) and snake_case", "a-link-the-guide-and-snake_case"),
    ],
)
def test_the_anchor_rule_is_githubs(heading, expected):
    assert anchor(heading) == expected


def test_a_repeated_heading_gets_a_numbered_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Notes\n\n## Notes\n\n```\n# not a heading\n```\n\n### Notes\n")
    assert anchors(page) == {"notes", "notes-1", "notes-2"}


def test_the_readme_links_every_docs_page():
    linked = {(ROOT / target.split("#")[0]).resolve() for target in links(ROOT / "README.md")}
    assert sorted(p.name for p in PAGES[1:] if p.resolve() not in linked) == []


@pytest.mark.parametrize(("page", "target"), CASES, ids=[f"{p.relative_to(ROOT)}:{t}" for p, t in CASES])
def test_a_relative_link_resolves(page, target):
    path, _, fragment = target.partition("#")
    destination = (page.parent / path).resolve() if path else page
    assert destination.exists(), f"{page.relative_to(ROOT)} links to {target}: no such file"
    if fragment:
        assert destination.suffix == ".md", f"{target}: an anchor into a file that is not a page"
        assert fragment in anchors(destination), f"{page.relative_to(ROOT)} links to {target}: no such heading"
