"""The front page and the docs: links resolve, the README stays short, every docs page opens with a summary."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250  # a newcomer should be done with the front page in five minutes
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def relative_links(text: str) -> list[str]:
    """Link targets outside code blocks and inline code that are not URLs or pure anchors."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_relative_links_finds_what_it_should():
    text = "[a](docs/x.md) [b](https://e.org/y) [c](#top) `[d](no.md)` ![e](img.png)\n```\n[f](fenced.md)\n```\n"
    assert relative_links(text) == ["docs/x.md", "img.png"]


def test_there_are_docs_pages():
    assert len(PAGES) > 1, "docs/ has no pages"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    """Every relative link names an existing path in the repository (its #anchor, if any, is not checked)."""
    broken = []
    for target in relative_links(page.read_text()):
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists() or ROOT not in (path, *path.parents):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing paths: {broken}"


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md is {lines} lines; move detail into docs/ (limit {README_MAX_LINES})"


def test_readme_keeps_the_two_commands():
    """.ci/run runs `make test`, "the README's test command"; the README must keep naming both commands."""
    text = (ROOT / "README.md").read_text()
    assert "make bench" in text and "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_page_opens_with_a_summary(page):
    """A '# Title' line, a blank line, then a summary of one or two lines of prose, then a blank line."""
    lines = page.read_text().splitlines() + [""]
    assert lines[0].startswith("# "), f"{page.name}: first line is not a '# Title'"
    assert lines[1] == "", f"{page.name}: no blank line after the title"
    summary = []
    for line in lines[2:]:
        if not line.strip():
            break
        summary.append(line)
    assert 1 <= len(summary) <= 2, f"{page.name}: the summary after the title is {len(summary)} lines, not 1-2"
    assert not re.match(r"\s*([#|>*-]|```|\d+\.)", summary[0]), f"{page.name}: the summary is not prose"
