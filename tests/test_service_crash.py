"""Crash safety: the server is killed with SIGKILL at random moments while clients send feedback and while an
update trains, then restarted. Every example that got a 202 must be in the store, unchanged; no half-written
version may exist; the last promoted version must serve. Against SQLite and against PostgreSQL."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import httpx
import pytest
from service_util import Server, add_key, digits_parts, examples, model_copy, new_database, postgres_cluster

from lifelong.checkpoint import load_model
from lifelong.service.database import default_url, default_versions_dir
from lifelong.service.runtime import pid_alive
from lifelong.service.store import Store
from lifelong.service.tables import RUNNING

TRIALS = 10
REQUESTS_PER_TRIAL = 40


@pytest.fixture(scope="module")
def postgres():
    with postgres_cluster() as url:
        yield url


def _intake(url: str, key: str, pool: list[dict], seed: int, stop: threading.Event,
            accepted: dict[int, tuple[str, object]], lock: threading.Lock) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=10) as client:
        # a bounded stream per trial: what an update trains on stays small, so its phases last
        # seconds even on a loaded machine and every kill target is reached
        for _ in range(REQUESTS_PER_TRIAL):
            if stop.is_set():
                break
            batch = rng.sample(pool, rng.randint(1, 8))
            try:
                reply = client.post("/feedback", json={"examples": batch})
            except httpx.HTTPError:  # the server is gone (or not up yet): the examples were not acknowledged
                time.sleep(0.05)
                continue
            if reply.status_code == 202:
                with lock:
                    for i, example in zip(reply.json()["ids"], batch, strict=True):
                        accepted[i] = (example["label"], example["input"])
            time.sleep(rng.uniform(0.0, 0.05))  # a steady stream, not a flood: updates stay seconds long


def _check(url: str, model, server: Server, accepted: dict[int, tuple[str, object]], key: str) -> dict:
    store = Store(url)
    try:
        rows = {f.id: f for f in store.feedback(list(accepted))}
        missing = sorted(set(accepted) - set(rows))
        assert not missing, f"{len(missing)} acknowledged examples lost: {missing[:10]}"
        for i, (label, value) in accepted.items():
            assert rows[i].label == label and rows[i].input == value, i
        versions = store.versions()
        for v in versions:
            load_model(default_versions_dir(model) / v.path)  # every file present, every hash right
        live = {u.candidate_path for u in store.updates(RUNNING) if u.owner.endswith(f":{server.proc.pid}")}
        for u in store.updates(RUNNING):  # only the restarted server's own update may be running
            assert u.owner.endswith(f":{server.proc.pid}"), (u.id, u.owner)
        on_disk = {p.name for p in default_versions_dir(model).iterdir()}
        for name in on_disk - {v.path for v in versions}:
            if name.startswith("."):  # a temporary directory: only of a process alive now
                pid = int(name.rsplit(".tmp-", 1)[1].split("-")[0])
                assert pid_alive(pid), f"half-written directory {name} left behind"
            else:
                assert name in live, f"directory {name} is no version"
        current = store.current_version()
        promoted = [v.number for v in versions if v.status == "promoted"]
        assert current == max(promoted)
        with server.client(key) as client:
            assert client.get("/health").json()["version"] == current
            x = digits_parts()["test"].x[:2].tolist()
            assert client.post("/predict", json={"inputs": x}).json()["version"] == current
        return {"versions": len(versions), "accepted": len(accepted), "stored": len(rows)}
    finally:
        store.close()


def _kill_moment(url: str, versions: Path, update_id: int | None, target: str, rng: random.Random) -> str:
    """Wait for the moment to kill at; returns what the update was doing then. `target`: "anytime" (a
    random moment in the first 3 s: queued, the worker starting, training), "evaluating" (as soon as
    evaluation starts), "writing" (as soon as the candidate's temporary directory appears) or "done"
    (just after the update's row is committed)."""
    if update_id is None or target == "anytime":
        time.sleep(rng.uniform(0.0, 3.0))
    store = Store(url)
    try:
        final = ("promoted", "rejected", "failed")
        deadline = time.monotonic() + 240  # an update on a loaded 2-core machine can take minutes
        while target != "anytime" and update_id is not None and time.monotonic() < deadline:
            if target == "writing" and any(".tmp-" in name for name in os.listdir(versions)):
                return "writing files"
            status = store.update(update_id).status
            if status in final or (target == "evaluating" and status == "evaluating"):
                break
            time.sleep(0.002)
        return store.update(update_id).status if update_id is not None else "no update"
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_during_intake_and_updates_loses_nothing_acknowledged(tmp_path, backend, request):
    model, parts = model_copy(tmp_path), digits_parts()
    url = default_url(model) if backend == "sqlite" else new_database(request.getfixturevalue("postgres"))
    key = add_key(url, "maintainer")
    pool = examples(parts["more"], count=300) + examples(parts["blank"], "blank", count=100)
    accepted: dict[int, tuple[str, object]] = {}
    lock, rng = threading.Lock(), random.Random(8)
    serve_args = ("--update-epochs", "5")  # short updates: kills land in every phase of one
    server = Server(model, url, *serve_args).start()
    killed_during = []
    try:
        for trial in range(TRIALS):
            stop = threading.Event()
            threads = [threading.Thread(target=_intake, args=(server.url, key, pool, 100 * trial + i, stop, accepted,
                                                              lock)) for i in range(2)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.05, 0.3))
            with server.client(key) as client:  # an update on what is pending, trained while intake goes on
                created = client.post("/updates")
            assert created.status_code in (202, 409), created.text
            update_id = created.json()["update_id"] if created.status_code == 202 else None
            target = ("anytime", "evaluating", "writing", "done")[trial % 4]
            killed_during.append(_kill_moment(url, default_versions_dir(model), update_id, target, rng))
            server.kill()
            stop.set()
            for t in threads:
                t.join()
            server = Server(model, url, *serve_args).start()  # recovery runs at start
            outcome = _check(url, model, server, accepted, key)
        store = Store(url)
        statuses = [u.status for u in store.updates()]
        store.close()
        print(f"\n{backend}: killed while the update was {killed_during}; {len(accepted)} examples acknowledged; "
              f"updates ended {statuses}; {outcome['versions']} versions")
        assert {"training", "evaluating"} <= set(killed_during)  # killed mid-update, early and late ...
        assert set(killed_during) & {"promoted", "rejected"}  # ... and just after an update was committed
        assert "failed" in statuses and len(accepted) > 100  # the killed updates were recovered as failed
    finally:
        server.stop()
