"""Every relative link in the README and docs/ reaches a file that exists, and a `#anchor` a heading
that exists there (GitHub's heading slugs), so that moving a section between pages cannot leave a
dead link behind."""

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(page: Path) -> str:
    """The page without its fenced code, where a `#` or `](` is code, not a heading or a link."""
    return re.sub(r"```.*?```", "", page.read_text(), flags=re.S)


@cache
def slugs(page: Path) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    text = prose(page)
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_the_slugs_follow_githubs_rule(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# facts with twice the steps a batch (`facts-long`)\n## Where it stands\n## Where it stands\n")
    assert slugs(page) == {"facts-with-twice-the-steps-a-batch-facts-long", "where-it-stands", "where-it-stands-1"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    dead = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            dead.append(f"{target} (no file {path})")
        elif anchor and file.suffix == ".md" and anchor not in slugs(file):
            dead.append(f"{target} (no heading #{anchor} in {file.name})")
    assert not dead, f"{page.name}: dead links: {dead}"
