"""The status page at `/` over real HTTP from a real `lifelong serve`: the key form, the cookie it sets,
the page built from the store, and what the cookie does not open. (tests/test_report_browser.py
renders the same page in Chromium.)"""

from __future__ import annotations

import hashlib

import httpx
from service_util import Server, add_key, digits_parts, examples, model_copy

from lifelong.service.store import Store, default_url


def test_the_page_asks_for_a_key_sets_a_strict_cookie_and_shows_the_store(tmp_path):
    model = model_copy(tmp_path)
    db = default_url(model)
    reader, contributor = add_key(db, "reader"), add_key(db, "contributor")
    with Server(model) as server, httpx.Client(base_url=server.url, timeout=60) as browser:
        sent = examples(digits_parts()["more"], count=3)
        assert browser.post("/feedback", json={"examples": sent}, headers={"X-API-Key": contributor}).status_code == 202

        form = browser.get("/")
        assert form.status_code == 200 and '<form method=post action="/key">' in form.text
        assert "Serving version" not in form.text  # nothing of the state without a key
        assert "default-src 'none'" in form.headers["content-security-policy"]

        wrong = browser.post("/key", data={"key": "ll_not-a-key"})
        assert wrong.status_code == 401 and "unknown or revoked key" in wrong.text and "set-cookie" not in wrong.headers
        signed = browser.post("/key", data={"key": reader}, follow_redirects=False)
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith(f"lifelong_page={hashlib.sha256(reader.encode()).hexdigest()};")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie and reader not in cookie

        page = browser.get("/")
        assert page.status_code == 200 and "Serving version <strong>1</strong>" in page.text
        assert "<td>pending</td><td class=num>3</td>" in page.text and "Held feedback (0)" in page.text
        assert "<script" not in page.text and page.headers["cache-control"] == "no-store"
        assert browser.get("/versions").status_code == 401  # the cookie opens the page, not the API
        paths = browser.get("/openapi.json").json()["paths"]
        assert "/" not in paths and "/key" not in paths

        store = Store(db)
        reader_id = next(k.id for k in store.api_keys() if k.name == "test reader")
        assert store.revoke_key(reader_id)
        assert "Serving version" not in browser.get("/").text  # a revoked key closes the page at once
