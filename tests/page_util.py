"""Checks of generated HTML pages shared by the report and service-page tests."""

from __future__ import annotations

import re
from html.parser import HTMLParser


class References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags, self.images = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for key, value in attrs:
            if key in ("src", "href", "action", "data", "poster", "srcset", "formaction") and value is not None:
                self.refs.append(value)
        if tag == "img":
            self.images.append(dict(attrs))


def check_local(text, folder=None):
    """The page loads nothing from elsewhere: no script, every reference an anchor, a data URI or a
    file in `folder`. Returns the parser."""
    parser = References()
    parser.feed(text)
    assert "script" not in parser.tags and "iframe" not in parser.tags
    assert not re.search(r"@import|url\(", text)
    for ref in parser.refs:
        assert not re.match(r"^[a-z][a-z0-9+.-]*://|^//", ref, re.I), ref
        if ref.startswith("#") or ref.startswith("data:"):
            continue
        assert folder is not None and (folder / ref).is_file() and (folder / ref).resolve().parent == folder.resolve()
    return parser
