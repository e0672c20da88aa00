"""A service that outgrows one process: `lifelong serve --updates workers` replicas sharing one PostgreSQL and
one version store (an fsspec URL here), updates run by `lifelong worker` processes that claim them with row
locks and hold a lease while they run. A worker killed mid-update has its update queued again (then failed
after its last attempt), never half-promoted; the replicas follow a promotion or a rollback within seconds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from service_util import REPO, Server, add_key, digits_parts, examples, model_copy, new_database, postgres_cluster
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from lifelong.service import queue
from lifelong.service.store import Store
from lifelong.service.tables import Audit, Feedback, Update


@pytest.fixture(scope="module")
def postgres():
    with postgres_cluster() as url:
        yield url


def _queued_store(url: str, feedback: int = 3) -> tuple[Store, int]:
    store = Store(url)
    store.migrate()
    store.bootstrap("v1")
    store.add_feedback([{"input": [0.0], "label": "a"}] * feedback, None, None)
    update_id, _ = store.create_update({}, None)
    return store, update_id


def _die(lease: queue.Lease) -> None:
    """What a killed worker's connection does: it goes away, and its advisory lock with it."""
    assert lease.connection is not None
    lease.connection.invalidate()
    lease.connection = None


def test_a_dead_workers_update_is_queued_again_then_failed(postgres):
    store, update_id = _queued_store(new_database(postgres))
    try:
        first = queue.claim(store, "worker a:1:x", lambda i: f"u{i}-a")
        assert first is not None and first[0].attempts == 1
        lease = first[1]
        assert queue.claim(store, "worker b:2:y", lambda i: f"u{i}-b") is None  # one update runs at a time
        assert not queue.abandoned(store, store.update(update_id)) and queue.reap(store, lambda p: None) == []
        _die(lease)
        removed: list[str] = []
        assert queue.reap(store, removed.append, max_attempts=2) == [(update_id, "queued")]
        assert removed == ["u1-a"] and store.pending_count() == 3  # its files removed, its feedback back
        second = queue.claim(store, "worker b:2:y", lambda i: f"u{i}-b")
        assert second is not None and second[0].attempts == 2 and second[0].candidate_path == "u1-b"
        _die(second[1])
        assert queue.reap(store, removed.append, max_attempts=2) == [(update_id, "failed")]
        failed = store.update(update_id)
        assert "the worker running it stopped (worker b:2:y, attempt 2 of 2)" in failed.error
        assert store.pending_count() == 3 and [v.number for v in store.versions()] == [1]
    finally:
        store.close()


def test_on_sqlite_a_worker_is_dead_when_its_process_is(tmp_path):
    store, update_id = _queued_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        owner = f"{queue.WORKER}{socket.gethostname()}:{gone.pid}:x"
        claimed = queue.claim(store, owner, lambda i: f"u{i}")
        assert claimed is not None and claimed[0].attempts == 1 and claimed[1].connection is None
        assert queue.reap(store, lambda p: None) == [(update_id, "queued")]
        alive = queue.claim(store, queue.worker_owner(), lambda i: f"u{i}")  # this process: alive
        assert alive is not None and queue.reap(store, lambda p: None) == []
    finally:
        store.close()


def test_a_claim_skips_a_row_another_transaction_holds(postgres):
    store, update_id = _queued_store(new_database(postgres))
    try:
        with Session(store.write_engine) as holder, holder.begin():
            holder.execute(select(Update).where(Update.id == update_id).with_for_update())  # mid-claim elsewhere
            started = time.monotonic()
            assert queue.claim(store, "worker a:1:x", lambda i: f"u{i}") is None
            assert time.monotonic() - started < 5  # skipped, not waited for
        claimed = queue.claim(store, "worker a:1:x", lambda i: f"u{i}")
        assert claimed is not None
        claimed[1].release()
        with store.write_engine.connect() as c:  # the lease is gone with release()
            assert c.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).scalar() == 0
    finally:
        store.close()


def _worker(url: str, versions: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "lifelong", "worker", "--db", url, "--versions-dir", versions,
                                 "--poll", "0.2"], stdout=out, stderr=out, cwd=REPO)


def _wait(predicate, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"{what} did not happen within {timeout} s\n{tails}")


def test_two_replicas_and_a_worker_killed_mid_update(tmp_path, postgres, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))  # each process caches versions here
    model, parts = model_copy(tmp_path), digits_parts()
    url, versions = new_database(postgres), (tmp_path / "bucket" / "versions").as_uri()  # a URL: the fsspec store
    key = add_key(url, "maintainer")
    logs = [tmp_path / n for n in ("a.log", "b.log", "w1.log", "w2.log")]
    flags = ("--versions-dir", versions, "--updates", "workers")
    store = Store(url)
    with Server(model, url, *flags, log=logs[0]) as a, Server(model, url, *flags, log=logs[1]) as b, \
            a.client(key) as ca, b.client(key) as cb:
        sent = examples(parts["more"], count=200) + examples(parts["blank"], "blank", count=80)
        assert ca.post("/feedback", json={"examples": sent}).status_code == 202
        update_id = cb.post("/updates", json={"epochs": 200}).json()["update_id"]
        time.sleep(1.0)
        assert store.update(update_id).status == "queued"  # the replicas run no update themselves

        w1 = _worker(url, versions, logs[2])
        try:
            _wait(lambda: store.update(update_id).status == "training", 60, "the worker's claim", logs)
            time.sleep(1.0)  # mid-training
            assert store.update(update_id).status == "training", "the update ended before the worker was killed"
            w1.send_signal(signal.SIGKILL)
        finally:
            w1.kill()
            w1.wait()
        _wait(lambda: store.update(update_id).status == "queued", 15, "a replica's re-queueing", logs)
        update = store.update(update_id)
        assert update.attempts == 1 and update.owner is None and [v.number for v in store.versions()] == [1]
        assert sorted(os.listdir(tmp_path / "bucket" / "versions")) == ["v1"]  # nothing of the dead worker's
        assert ca.get("/health").json()["version"] == cb.get("/health").json()["version"] == 1
        assert store.pending_count() == 280

        w2 = _worker(url, versions, logs[3])
        try:
            _wait(lambda: store.update(update_id).status in ("promoted", "rejected", "failed"), 240,
                  "the second attempt", logs)
            info = cb.get(f"/updates/{update_id}").json()
            assert info["status"] == "promoted", info
            assert store.update(update_id).attempts == 2
            _wait(lambda: ca.get("/health").json()["version"] == cb.get("/health").json()["version"] == 2, 5,
                  "both replicas serving version 2", logs)
            assert ca.post("/rollback", json={"version": 1}).status_code == 200
            _wait(lambda: cb.post("/predict", json={"inputs": parts["test"].x[:2].tolist()}).json()["version"] == 1,
                  5, "replica b following the rollback", logs)
        finally:
            w2.send_signal(signal.SIGTERM)
            assert w2.wait(timeout=30) == 0
    with store.read() as s:  # every update was claimed by a worker, none by a replica
        claims = [a.actor for a in s.scalars(select(Audit).where(Audit.action == "update.claim"))]
        assert len(claims) == 2 and all(c.startswith("worker ") for c in claims)
        assert s.scalar(select(Feedback.id).where(Feedback.update_id.is_(None), Feedback.status == "pending")) is None
    store.close()
