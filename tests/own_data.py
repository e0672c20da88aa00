"""Helpers of the end-to-end test on a user's own data (test_own_data_e2e.py): the README section's
commands and a shell that runs them as a user types them; a run on a data spec then served; one
feedback update taught through the API."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from service_util import Server, add_key, free_port, wait_update

from lifelong.cli import main
from lifelong.service.database import default_url

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Your own data in five minutes"


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The shell commands of the README's section, in order: a command goes on over lines that end in a
    backslash or while a quote is open."""
    section = readme.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    commands, current = [], ""
    for line in "".join(re.findall(r"```bash\n(.*?)```", section, flags=re.S)).splitlines(keepends=True):
        current += line
        if current.rstrip().endswith("\\"):
            continue
        try:
            shlex.split(current, comments=True)
        except ValueError:  # inside a quote
            continue
        if current.strip():
            commands.append(current.strip())
        current = ""
    assert not current.strip(), f"unterminated command in the README section: {current!r}"
    return commands


class Shell:
    """Commands run one after another in `work` as a user types them: by bash, with `lifelong` and `python`
    this interpreter, one torch thread per process (as every test runs), what a command exports kept for
    the next ones, port 8000 replaced by a free one. A command ending in `&` starts in the background and
    is waited for until its server answers; it is stopped when the shell closes."""

    def __init__(self, work: Path):
        self.work, self.port = work, free_port()
        bin_dir = work.parent / "bin"
        bin_dir.mkdir(exist_ok=True)
        for name, target in (("lifelong", f'"{sys.executable}" -m lifelong'), ("python", f'"{sys.executable}"')):
            (bin_dir / name).write_text(f'#!/bin/sh\nexec {target} "$@"\n')
            (bin_dir / name).chmod(0o755)
        path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": path,
                    "OMP_NUM_THREADS": "1"}
        self.exports, self.log = work.parent / "exports.sh", work.parent / "background.log"
        self.background: list[subprocess.Popen[bytes]] = []

    def run(self, command: str, timeout: float = 300) -> str:
        """Run one command; its standard output. Fails the test with what it printed if it fails."""
        command = command.replace("8000", str(self.port))
        words = shlex.split(command, comments=True)
        if words[-1] == "&":
            self._start(words[:-1])
            return ""
        script = f"set -o pipefail\n[ -f {self.exports} ] && . {self.exports}\n{command}\nexport -p > {self.exports}\n"
        try:
            proc = subprocess.run(["bash", "-c", script], cwd=self.work, env=self.env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no end within {timeout} s: {command}\n{self._log()}\n{self._updates()}") from None
        assert proc.returncode == 0, f"{command}\nexit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    def _start(self, words: list[str]) -> None:
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(words, cwd=self.work, env=self.env, stdout=log, stderr=log, start_new_session=True)
        self.background.append(proc)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{shlex.join(words)} exited with {proc.returncode}\n{self._log()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"{shlex.join(words)} did not answer within 120 s\n{self._log()}")

    def _updates(self) -> str:
        """What the server says of its updates (with the key a command exported), to tell why one failed."""
        key = re.search(r"KEY=\"([^\"]+)\"", self.exports.read_text()) if self.exports.exists() else None
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{self.port}/updates/1", timeout=5,
                             headers={"X-API-Key": key.group(1) if key else ""}).text
        return ""

    def _log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def __enter__(self) -> Shell:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.background:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def served(tmp_path: Path, data: str, *run_args: str, serve: Sequence[str] = ()) -> Iterator[httpx.Client]:
    """`lifelong run --data DATA` (in this process) with its HTML report and `--save`, then `lifelong serve` on
    the saved model in a subprocess: a maintainer's client of it. EWC with replay, as the service updates."""
    model, report = tmp_path / "model", tmp_path / "report"
    main(["run", "--data", data, "--strategy", "ewc+replay", "--replay-batch", "128", "--epochs", "5",
          "--batch-size", "16", *run_args, "--threads", "1", "--quiet", "--report", str(report), "--save", str(model)])
    assert (report / "index.html").is_file() and (model / "manifest.json").is_file()
    key = add_key(default_url(model), "maintainer")
    with Server(model, None, *serve) as server, server.client(key) as client:
        yield client


def teach(c: httpx.Client, inputs: Sequence[Any], labels: str | Sequence[str], probes: Sequence[Any],
          expected: Sequence[str], task: int | None = None, update: dict[str, Any] | None = None) -> None:
    """Feedback of a label (or labels) the model has never seen, one update that the gate promotes, then
    the probes answered as `expected` by version 2 (asked for `task` in a task-incremental model)."""
    labels = [labels] * len(inputs) if isinstance(labels, str) else list(labels)
    reply = c.post("/feedback", json={"examples": [{"input": x, "label": y} for x, y in zip(inputs, labels,
                                                                                           strict=True)]})
    assert reply.status_code == 202 and reply.json()["accepted"] == len(inputs), reply.text
    reply = c.post("/updates", json=update)
    assert reply.status_code == 202, reply.text
    info = wait_update(c, reply.json()["update_id"])
    assert info["status"] == "promoted", info
    reply = c.post("/predict", json={"inputs": list(probes), "task": task})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["version"] == 2 and [p["label"] for p in answer["predictions"]] == list(expected), answer
