"""CI cannot go green by skipping: a missing component stops the run and says what to install."""

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _pytest(*args, **env):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", *args],
                          cwd=TESTS.parent, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


def test_ci_stops_at_once_naming_what_is_missing(tmp_path):
    proc = _pytest(str(TESTS / "test_metrics.py"), CI="true", LIFELONG_CLINC150=str(tmp_path / "nowhere"),
                   LIFELONG_CHROMIUM=str(tmp_path / "no-chromium"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out
    assert "CLINC150" in out and "LIFELONG_CLINC150" in out and "apt-get install chromium" in out


def test_in_ci_a_skip_fails_and_locally_it_is_listed(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text("import pytest\n\ndef test_needs_something():\n    pytest.skip('needs something: install it')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "LIFELONG_CHROMIUM": sys.executable}  # (the preflight's own check is the test above)
    local = _pytest(str(probe), "-p", "preflight", "-rs", "--rootdir", str(tmp_path), CI="", **env)
    assert local.returncode == 0 and "needs something: install it" in local.stdout
    import preflight

    if preflight.missing():  # the preflight would stop first; what it says is tested above
        return
    ci = _pytest(str(probe), "-p", "preflight", "--rootdir", str(tmp_path), CI="true", **env)
    assert ci.returncode == 1 and "needs something" in ci.stdout
    assert "skipped in CI, where every test must run" in ci.stdout


def test_the_preflight_finds_clinc150_in_either_form(tmp_path):
    """The shared copy is gzipped (data_full.json.gz): the check must look where the loader looks."""
    import gzip
    import json

    import preflight

    domains = {f"domain{d}": [f"intent{d}"] for d in range(10)}
    (tmp_path / "domains.json").write_text(json.dumps(domains))
    rows = {split: [[f"query {d}", f"intent{d}"] for d in range(10)] for split in ("train", "val", "test")}
    rows["oos_test"] = [["what is the meaning of life", "oos"]]
    with gzip.open(tmp_path / "data_full.json.gz", "wt") as fh:
        json.dump(rows, fh)
    old = os.environ.get("LIFELONG_CLINC150")
    os.environ["LIFELONG_CLINC150"] = str(tmp_path)
    try:
        assert not any("CLINC150" in line for line in preflight.missing())
    finally:
        os.environ.pop("LIFELONG_CLINC150") if old is None else os.environ.__setitem__("LIFELONG_CLINC150", old)
