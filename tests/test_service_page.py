"""The status page at `/` over real HTTP from a real `lifelong serve`: the key form, the cookie it sets,
the page built from the store, and what the cookie does not open; and the page's rendering from a
hand-written state. (tests/test_report_browser.py renders the same page in Chromium.)"""

from __future__ import annotations

import hashlib
import re

import httpx
import pytest
from page_util import References, check_local
from service_util import Server, add_key, digits_parts, examples, model_copy

from lifelong.reporting.service_page import gate_heatmap, render_key_page, render_service_page, render_update_page
from lifelong.service.database import default_url
from lifelong.service.store import Store


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


# ---- the page rendered from a hand-written state ----------------------------------------------

def gate_report(current, candidate, columns, sizes, tolerance=0.01):
    """A gate report in the shape `lifelong.service.gate.decide` returns, written out by hand."""
    checks, failed = [], []
    for j, (cur, cand) in enumerate(zip(current, candidate, strict=True)):
        guard = j < len(columns) - 1
        threshold = cur - tolerance if guard else cur
        checks.append({"check": "guard" if guard else "new feedback", "task": j, "name": columns[j], "size": sizes[j],
                       "current": cur, "candidate": cand, "threshold": threshold, "passed": cand >= threshold})
        if cand < threshold:
            failed.append(f'guard "{columns[j]}": candidate {cand:.3f} < current {cur:.3f} - tolerance '
                          f"{tolerance:.3f} = {threshold:.3f}")
    return {"passed": not failed, "tolerance": tolerance, "checks": checks, "failed": failed,
            "accuracy_matrix": {"rows": ["current", "candidate"], "columns": columns, "values": [current, candidate]}}


def service_state():
    domains = ["banking", "credit_cards", "kitchen_and_dining", "home", "auto_and_commute"]
    return {
        "title": "intent classifier", "current_version": 3, "generated": "2026-01-05 10:00 UTC",
        "versions": [{"number": v, "status": "promoted", "parent": v - 1 or None, "created_at": f"2026-01-0{v}",
                      "feedback_ids": list(range(100 * v))} for v in (1, 2, 3)],
        "updates": [
            {"id": 4, "status": "rejected", "parent_version": 3, "candidate_version": 4, "examples": 150,
             "report": gate_report([0.95, 0.93, 0.91, 0.9, 0.94, 0.12], [0.888, 0.92, 0.9, 0.89, 0.93, 0.86],
                                   [*domains, "new feedback (held out)"], [50] * 5 + [30])},
            {"id": 3, "status": "promoted", "parent_version": 2, "candidate_version": 3,
             "report": gate_report([0.95, 0.93, 0.91, 0.9, 0.1], [0.95, 0.93, 0.91, 0.9, 0.9],
                                   [*domains[:4], "new"], [50] * 4 + [30])},
            {"id": 5, "status": "training"}],
        "feedback": {"feedback": 750, "pending": 12, "updates": {"promoted": 2, "rejected": 1}},
        "held_feedback": [{"id": 801, "input": "<script>alert(1)</script> what's my balance", "label": "balance",
                           "reason": "label conflicts with near-duplicates"},
                          {"id": 802, "input": "x" * 1000, "label": "odd", "reason": "outlier"}],
    }


def test_the_service_page_shows_versions_updates_and_feedback():
    text = render_service_page(service_state())
    parser = check_local(text)
    assert len(parser.images) == 2 and all(img["src"].startswith("data:image/png;base64,") for img in parser.images)
    # the reason for the rejection, escaped
    assert "guard &quot;banking&quot;: candidate 0.888 &lt; current 0.950 - tolerance 0.010 = 0.940" in text
    assert "every check passed" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
    assert re.search(r'<tr class="current"><td[^>]*>3</td>', text)  # the serving version is marked
    assert "300 items" in text  # a long list of feedback ids is counted, not printed
    assert "750" in text and "promoted: 2, rejected: 1" in text and "Held feedback (2)" in text
    assert "1 rejected, 1 promoted, 1 training" in text
    assert "x" * 1000 not in text  # long inputs are shortened
    assert "-6.2" in text  # the failed check's difference in points


def test_the_service_page_takes_the_real_gate_report():
    gate = pytest.importorskip("lifelong.service.gate", reason="the service (issue 8) is not in this tree")
    report = gate.decide([0.95, 0.90, 0.10], [0.96, 0.85, 0.80], ["digits 0-1", "digits 2-3", "new"], [50, 50, 10])
    text = render_service_page({"current_version": 1, "updates": [{"id": 1, "status": "rejected", "report": report}]})
    assert check_local(text).images and report["failed"][0].replace('"', "&quot;").replace("<", "&lt;") in text


def test_the_gate_heatmap_holds_both_rows_with_values():
    matrix = service_state()["updates"][0]["report"]["accuracy_matrix"]
    fig = gate_heatmap(matrix)
    ax = fig.axes[0]
    assert sorted(float(t.get_text()) for t in ax.texts) == pytest.approx(sorted(100 * v for row in matrix["values"]
                                                                                 for v in row))
    assert ax.get_xticklabels()[0].get_text().split("\n")[1] == "-6.2 pp"
    with pytest.raises(ValueError):
        gate_heatmap({**matrix, "values": [[0.5], [0.5]]})


def test_update_and_key_pages():
    update = render_update_page(service_state()["updates"][0])
    assert check_local(update).images and "rejected" in update
    key = render_key_page(action="/session", message="wrong key")
    parser = References()
    parser.feed(key)
    assert "script" not in parser.tags and parser.refs == ["data:,", "/session"]  # posts to the service itself
    assert "method=post" in key and "type=password name=key" in key and "wrong key" in key


def test_the_service_page_works_with_the_minimum():
    text = render_service_page({"current_version": 1})
    assert "No updates yet" in text and "No versions recorded" in text and check_local(text)
