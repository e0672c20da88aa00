#!/usr/bin/env python3
"""Make the README's report screenshot: a real report, served locally, photographed by headless Chromium.

    python scripts/report_screenshot.py                       # runs a small real comparison first (minutes)
    python scripts/report_screenshot.py results/vision-*.json # or a report of existing result files

Without result files it compares naive, EWC, SI and replay on 5 tasks of Permuted digits (scikit-learn's
bundled 8x8 digits, nothing to download) over 3 seeds (a few minutes on 2 cores). Needs Debian's chromium
(apt-get install chromium) and playwright for Python; no browser is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def small_comparison(seeds: int) -> list[dict[str, Any]]:
    """A real comparison where naive fine-tuning visibly forgets and consolidation does not."""
    from lifelong.data.streams import StreamConfig
    from lifelong.learner import LearnerConfig
    from lifelong.run import ModelConfig, RunConfig, run

    results = []
    for strategy, options in (("naive", {}), ("ewc", {"strength": 1000.0}), ("si", {}), ("replay", {"memory": 200})):
        for seed in range(seeds):
            print(f"running {strategy}, seed {seed}", file=sys.stderr)
            cfg = RunConfig(StreamConfig("permuted-digits", tasks=5), strategy, options,
                            LearnerConfig(epochs=20, batch_size=64), ModelConfig("mlp", (256, 256)), seed=seed)
            results.append(run(cfg).record)
    return results


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # problems are read from the browser
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def screenshot(url: str, out: Path, chromium: str, width: int, height: int) -> list[str]:
    """The top `width` x `height` pixels of the page; returns console errors and broken images."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=chromium, headless=True, args=FLAGS,
                                                       viewport={"width": width, "height": height})
        page = context.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(url, wait_until="load")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        broken = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)")
        problems += [f"image did not render: {src}" for src in broken]
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        context.close()
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="*", help="result JSON files (default: run a small comparison)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "report.png"), help="default: docs/report.png")
    parser.add_argument("--report-dir", help="keep the report here (default: a temporary folder)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the small comparison (default: 3)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    if not Path(args.chromium).is_file():
        print(f"no Chromium at {args.chromium}: apt-get install chromium", file=sys.stderr)
        return 1
    from lifelong.reporting.report import load_results, write_report

    results = load_results(args.results) if args.results else small_comparison(args.seeds)
    with contextlib.ExitStack() as stack:
        folder = Path(args.report_dir or stack.enter_context(tempfile.TemporaryDirectory()))
        write_report(results, folder)
        with serve(folder) as base:
            problems = screenshot(f"{base}/index.html", Path(args.out), args.chromium, args.width, args.height)
    if problems:
        print("the page did not render cleanly:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"screenshot of a report of {len(results)} run(s) written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
