"""The OpenAPI pages of a real `lifelong serve` work offline: /docs and /redoc reference only files the
service serves itself, and those files are there. (tests/test_report_browser.py opens /docs in
Chromium and checks that no request leaves the machine.)"""

from __future__ import annotations

import re
from urllib.parse import urlparse

import httpx
from service_util import Server, model_copy


def referenced(html: str) -> list[str]:
    """Every URL a page refers to: src and href attributes, the spec's url, quoted absolute URLs."""
    found = re.findall(r'(?:src|href|spec-url)="([^"]*)"', html)
    found += re.findall(r"url: '([^']*)'", html)
    found += re.findall(r"""["'](https?://[^"']*|//[^"']*)["']""", html)
    return found


def test_docs_and_redoc_reference_only_local_files_which_are_served(tmp_path):
    with Server(model_copy(tmp_path)) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        for page, scripts in (("/docs", ["swagger-ui-bundle.js"]), ("/redoc", ["redoc.standalone.js"])):
            reply = c.get(page)
            assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
            urls = referenced(reply.text)
            assert "/openapi.json" in urls and len(urls) >= 3, urls
            for url in urls:
                parsed = urlparse(url)
                assert not parsed.scheme and not parsed.netloc and url.startswith("/"), (page, url)
            assert "http://" not in reply.text and "https://" not in reply.text  # no CDN, no fonts, no validator
            assert all(any(u.endswith(name) for u in urls) for name in scripts)
            for url in urls:
                got = c.get(url)
                assert got.status_code == 200, (page, url)
                if url.endswith(".js"):
                    assert "javascript" in got.headers["content-type"] and len(got.content) > 100_000
                elif url.endswith(".css"):
                    assert got.headers["content-type"].startswith("text/css") and len(got.content) > 10_000
        paths = c.get("/openapi.json").json()["paths"]
        assert not any(p.startswith(("/docs", "/redoc")) for p in paths)
