"""Helpers of the service tests: a small saved model, real servers in subprocesses, real PostgreSQL.

The model: scikit-learn's digits, classes 0-7 learned class-incrementally in two tasks with EWC and
replay from 40 % of their training images. The rest is what clients send as feedback: more images of
the known digits, and "blank" scans (a label the model has never seen).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import torch

from lifelong.checkpoint import save_run
from lifelong.data import load_digits
from lifelong.data.task import ArrayDataset
from lifelong.data.vision import split
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import ModelConfig, model_for
from lifelong.service.auth import hash_key, new_key
from lifelong.service.database import default_url
from lifelong.service.store import Store

REPO = Path(__file__).resolve().parents[1]
# a reservoir memory, as when the screens and the gate's tolerance were set on this world
OPTIONS = {"memory": 1000, "replay_batch": 64, "strength": 100.0, "selection": "reservoir"}


def classes_of(data: ArrayDataset, keep: list[int]) -> ArrayDataset:
    return data.subset(torch.isin(data.y, torch.tensor(keep)).nonzero().squeeze(1))


@functools.cache
def digits_parts() -> dict[str, ArrayDataset]:
    train, test = load_digits()
    old = classes_of(train, list(range(8)))
    cut = int(0.4 * len(old))
    blank = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.15
    return {"base": old.subset(torch.arange(cut)), "more": old.subset(torch.arange(cut, len(old))),
            "test": classes_of(test, list(range(8))), "blank": ArrayDataset(blank, torch.zeros(300, dtype=torch.long))}


@functools.cache
def model_template() -> Path:
    """The saved digits model (trained once per test session, about a second)."""
    from lifelong.strategies import build_strategy

    parts = digits_parts()
    stream = split(parts["base"], parts["test"], 2, "class", name="digits 0-7")
    torch.manual_seed(0)
    model, network = model_for(stream, ModelConfig(hidden=(128,)))
    learner = Learner(model, build_strategy("ewc+replay", OPTIONS), LearnerConfig(epochs=20, batch_size=32))
    for task in stream:
        learner.fit(stream, task.id)
    path = Path(tempfile.mkdtemp(prefix="lifelong-test-model-")) / "digits"
    save_run(path, stream, model, learner.strategy, network, {"strategy": "ewc+replay", "strategy_options": OPTIONS,
                                                               "learner": {"batch_size": 32, "lr": 1e-3}})
    return path


def model_copy(where: Path) -> Path:
    target = where / "digits"
    shutil.copytree(model_template(), target)
    return target


def examples(data: ArrayDataset, label: str | None = None, start: int = 0, count: int | None = None) -> list[dict]:
    """Feedback examples (nested lists) from a dataset, labelled by its labels or `label`."""
    end = len(data) if count is None else start + count
    return [{"input": data.x[i].tolist(), "label": label or str(int(data.y[i]))} for i in range(start, end)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_key(db_url: str, role: str) -> str:
    store = Store(db_url)
    store.migrate()
    key = new_key()
    store.add_key(role, hash_key(key), f"test {role}")
    store.close()
    return key


class Server:
    """`lifelong serve` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, model: Path, db_url: str | None = None, *args: str, log: Path | None = None):
        self.model, self.db_url = model, db_url or default_url(model)
        self.args, self.log_path = args, log or model.parent / "server.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 90) -> Server:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "lifelong", "serve", "--model", str(self.model), "--db", self.db_url,
                   "--port", str(port), *self.args]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(command, stdout=log, stderr=log, cwd=REPO)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"the server did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def client(self, key: str | None = None, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": key} if key else {}, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, no chance to clean up; reaped, so its pid is free."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_update(client: httpx.Client, update_id: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get(f"/updates/{update_id}").json()
        if info["status"] in ("promoted", "rejected", "failed"):
            return info
        time.sleep(0.2)
    raise TimeoutError(f"update {update_id} did not finish in {timeout} s: {info}")


# -- PostgreSQL from Debian's package, in a temporary directory -----------------------------------------------
def postgres_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def ensure_postgres() -> Path | None:
    """The binaries' folder; runs scripts/ensure-postgres.sh (apt-get as root) once when they are missing."""
    if postgres_bin() is None:
        subprocess.run(["sh", str(REPO / "scripts" / "ensure-postgres.sh")], check=False, timeout=900)
    return postgres_bin()


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """Start a PostgreSQL server (initdb, pg_ctl) in a temporary directory on a free port; yields the
    server URL without a database name. Run as `nobody` when we are root (postgres refuses root)."""
    bindir = ensure_postgres()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed and could not be installed (scripts/ensure-postgres.sh)")
    root = Path(tempfile.mkdtemp(prefix="lifelong-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "nobody", "nogroup")
        as_user = ["runuser", "-u", "nobody", "--"]
    data, port = root / "data", free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120, cwd=root)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


def new_database(server_url: str) -> str:
    import secrets

    import psycopg

    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(server_url + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server_url}/{name}"
