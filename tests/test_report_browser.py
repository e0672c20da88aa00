"""The report, the service page and the OpenAPI page in a real browser: headless Debian Chromium driven by Playwright,
pages served by a real local HTTP server. Every image must render; the console must stay clean; no
request may leave 127.0.0.1."""

import contextlib
import functools
import http.server
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

from lifelong.data.streams import StreamConfig
from lifelong.learner import LearnerConfig
from lifelong.reporting.report import write_report
from lifelong.reporting.service_page import render_service_page
from lifelong.run import ModelConfig, RunConfig, run

CHROMIUM = os.environ.get("LIFELONG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium); "
                "no browser is downloaded", allow_module_level=True)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the test reads failures from the browser, not the server log
        pass


@contextlib.contextmanager
def serve(folder):
    """A real HTTP server for `folder` on a free port of 127.0.0.1; yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        yield context
        context.close()


def visit(context, url, screenshot, key=None):
    """Open `url` (typing `key` into the page's key form first, when given), wait for every image, take a
    full-page screenshot; returns what a user would notice."""
    page = context.new_page()
    problems, requests = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.on("request", lambda r: requests.append(r.url))
    response = page.goto(url, wait_until="load")
    assert response is not None and response.status == 200
    if key is not None:
        page.fill("input[name=key]", key)
        with page.expect_navigation(wait_until="load") as navigation:
            page.click("button[type=submit]")
        response = navigation.value
        assert response is not None and response.status == 200 and response.url == url
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    images = page.evaluate("Array.from(document.images).map(i => ({src: i.getAttribute('src').slice(0, 40), "
                           "natural: i.naturalWidth, shown: i.getBoundingClientRect().width}))")
    page.screenshot(path=str(screenshot), full_page=True)
    title, text = page.title(), page.inner_text("body")
    page.close()
    return {"problems": problems, "requests": requests, "images": images, "title": title, "text": text}


def test_the_report_renders_in_chromium(browser, tmp_path):
    result = run(RunConfig(StreamConfig("split-digits", tasks=5), "ewc", learner=LearnerConfig(epochs=1),
                           model=ModelConfig(hidden=(32,)))).record
    folder = tmp_path / "report"
    write_report([result], folder)
    shot = tmp_path / "report.png"
    with serve(folder) as base:
        seen = visit(browser, f"{base}/index.html", shot)
    assert seen["problems"] == []
    assert len(seen["images"]) == len(list(folder.glob("*.png"))) == 4
    assert all(img["natural"] > 0 and img["shown"] > 0 for img in seen["images"]), seen["images"]
    assert all(urlparse(u).hostname == "127.0.0.1" or u.startswith("data:") for u in seen["requests"])
    assert "lifelong report" in seen["title"]
    with Image.open(shot) as image:
        assert image.size[0] == 1280 and image.size[1] > 2000  # the whole page, figures included
        assert len(image.getcolors(1 << 20) or range(1 << 20)) > 100  # not a blank page


def test_the_service_page_renders_in_chromium(browser, tmp_path):
    from test_service_page import service_state  # the same hand-made state the unit tests check

    (tmp_path / "index.html").write_text(render_service_page(service_state()), encoding="utf-8")
    shot = tmp_path / "service.png"
    with serve(tmp_path) as base:
        seen = visit(browser, f"{base}/", shot)
    assert seen["problems"] == []
    assert len(seen["images"]) == 2 and all(img["src"].startswith("data:image/png") for img in seen["images"])
    assert all(img["natural"] > 0 and img["shown"] > 0 for img in seen["images"]), seen["images"]
    assert all(urlparse(u).hostname == "127.0.0.1" or u.startswith("data:") for u in seen["requests"])
    with Image.open(shot) as image:
        assert image.size[0] == 1280 and image.size[1] > 900


def test_the_served_service_page_renders_in_chromium(browser, tmp_path):
    from service_util import Server, add_key, digits_parts, examples, model_copy, wait_update

    from lifelong.service.database import default_url

    model, parts = model_copy(tmp_path), digits_parts()
    db = default_url(model)
    reader, maintainer, attacker = (add_key(db, role) for role in ("reader", "maintainer", "contributor"))
    with Server(model, None, "--update-epochs", "3") as server, server.client(maintainer) as admin, \
            server.client(attacker) as bad:
        assert admin.post("/feedback", json={"examples": examples(parts["more"], count=150)}).status_code == 202
        wrong = examples(parts["more"], start=150, count=20)
        for example in wrong:  # digits labelled as another digit: the screens hold them
            example["label"] = str((int(example["label"]) + 3) % 8)
        assert bad.post("/feedback", json={"examples": wrong}).status_code == 202
        info = wait_update(admin, admin.post("/updates").json()["update_id"])
        assert info["status"] in ("promoted", "rejected") and info["report"]["screening"]["held"] > 0

        shot = tmp_path / "served.png"
        seen = visit(browser, f"{server.url}/", shot, key=reader)
        cookies = browser.cookies(server.url)
    assert seen["problems"] == []
    assert len(seen["images"]) == 1 and seen["images"][0]["src"].startswith("data:image/png")  # the gate heatmap
    assert all(img["natural"] > 0 and img["shown"] > 0 for img in seen["images"]), seen["images"]
    assert all(urlparse(u).hostname == "127.0.0.1" or u.startswith("data:") for u in seen["requests"])
    assert not any(reader in u for u in seen["requests"])  # the key travelled in the form's body only
    assert f"Update {info['id']}" in seen["text"] and f"Held feedback ({info['report']['screening']['held']})" \
        in seen["text"]
    [cookie] = cookies
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] != reader
    with Image.open(shot) as image:
        assert image.size[0] == 1280 and image.size[1] > 900


def test_the_openapi_page_works_offline_in_chromium(browser, tmp_path):
    from service_util import Server, model_copy

    with Server(model_copy(tmp_path)) as server:
        page = browser.new_page()
        problems, requests = [], []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        page.on("request", lambda r: requests.append(r.url))
        response = page.goto(f"{server.url}/docs", wait_until="load")
        assert response is not None and response.status == 200
        page.wait_for_selector(".opblock", timeout=30_000)  # Swagger UI drew the operations from /openapi.json
        operations = page.locator(".opblock").count()
        page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
        page.close()
    assert problems == []
    assert operations >= 10
    assert requests and all(urlparse(u).hostname == "127.0.0.1" or u.startswith("data:") for u in requests), requests
