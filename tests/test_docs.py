"""The README and docs/ hold together: links resolve, the README's figure exists, its first commands stay first.

Fast and self-contained (standard library only, no subprocess): it reads the
Markdown files of the checkout and nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted([README, *(REPO / "docs").rglob("*.md")])

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\S\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
# [text](target "title") and ![alt](target); the target may be <wrapped in angle brackets>
INLINE_LINK = re.compile(r"(!?)\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
HTML_IMAGE = re.compile(r"<img\s[^>]*src=[\"']([^\"']+)[\"']", re.I)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are code, not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(path: Path) -> list[tuple[str, bool]]:
    """Every link target of a Markdown file, and whether it is an image."""
    text = prose(path.read_text(encoding="utf-8"))
    found = [(m.group(2).strip("<>"), m.group(1) == "!") for m in INLINE_LINK.finditer(text)]
    found += [(m.group(1).strip("<>"), False) for m in REFERENCE_LINK.finditer(text)]
    found += [(m.group(1), True) for m in HTML_IMAGE.finditer(text)]
    return found


def local_target(source: Path, target: str) -> Path | None:
    """The file a relative link points at (None for external links and anchors within the page)."""
    if EXTERNAL.match(target) or target.startswith("#"):
        return None
    target = target.split("#", 1)[0].split("?", 1)[0]
    return (REPO / target.lstrip("/")) if target.startswith("/") else (source.parent / target)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)[\s#]*$", FENCE.sub("", path.read_text(encoding="utf-8")), re.M):
        anchor = github_anchor(m.group(1))
        found.add(anchor if anchor not in seen else f"{anchor}-{seen[anchor]}")
        seen[anchor] = seen.get(anchor, 0) + 1
    return found


def fenced_blocks(text: str) -> list[str]:
    return [m.group(0) for m in FENCE.finditer(text)]


def test_the_parser_finds_links_and_skips_code():
    sample = "See [a](docs/a.md#x), ![fig](docs/f.png) and [w](https://x.org).\n`[not](a link)`\n```\n[no](nope.md)\n```\n[r]: ref.md\n"
    page = REPO / "sample.md"
    text = prose(sample)
    found = [(m.group(2), m.group(1) == "!") for m in INLINE_LINK.finditer(text)]
    found += [(m.group(1), False) for m in REFERENCE_LINK.finditer(text)]
    assert found == [("docs/a.md#x", False), ("docs/f.png", True), ("https://x.org", False), ("ref.md", False)]
    assert local_target(page, "docs/a.md#x") == REPO / "docs/a.md"
    assert local_target(page, "https://x.org") is None and local_target(page, "#top") is None
    assert github_anchor("Add a model, step by step (`cellot`)") == "add-a-model-step-by-step-cellot"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target, _ in links(page):
        path = local_target(page, target)
        if path is not None and not path.exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: links to missing files: {', '.join(broken)}"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_anchor_into_a_markdown_page_names_one_of_its_headings(page):
    broken = []
    for target, _ in links(page):
        if EXTERNAL.match(target) or "#" not in target:
            continue
        path = page if target.startswith("#") else local_target(page, target)
        anchor = target.split("#", 1)[1]
        if path.suffix == ".md" and path.is_file() and anchor not in anchors(path):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: anchors that match no heading: {', '.join(broken)}"


def test_the_readme_shows_its_figure_and_the_figure_exists():
    images = [local_target(README, target) for target, image in links(README) if image]
    images = [p for p in images if p is not None]
    assert images, "the README shows no figure"
    for path in images:
        assert path.is_file(), f"README figure missing: {path.relative_to(REPO)}"
        assert path.stat().st_size < 300_000, f"{path.relative_to(REPO)} is {path.stat().st_size} bytes; keep the README light"


def test_the_two_commands_are_the_readmes_first_code_block_near_the_top():
    text = README.read_text(encoding="utf-8")
    blocks = fenced_blocks(text)
    assert blocks, "the README has no code block"
    assert "make demo" in blocks[0] and "make test" in blocks[0], blocks[0]
    top = "\n".join(text.splitlines()[:40])
    assert "make demo" in top and "make test" in top
    # the second route, for users of Snakemake alone: each rule's jobs in their conda environment
    assert "snakemake --cores 4 --use-conda" in blocks[1], blocks[1]


def test_the_readme_stays_a_short_guide():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; move details to docs/"
