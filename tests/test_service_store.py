"""The store and the gate without HTTP: migrations match the tables, SQLite runs in WAL mode, recovery after a
crash, and the gate's decisions at their boundaries."""

from __future__ import annotations

import socket

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from service_util import model_copy, new_database, postgres_cluster
from sqlalchemy import text

from lifelong.service.gate import decide, split_holdout
from lifelong.service.runtime import Service, ServiceConfig
from lifelong.service.store import Store
from lifelong.service.tables import Base


@pytest.fixture(scope="module")
def postgres():
    with postgres_cluster() as url:
        yield url


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_create_exactly_the_tables_and_run_twice(tmp_path, backend, request):
    url = f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite" else new_database(request.getfixturevalue("postgres"))
    store = Store(url)
    store.migrate()
    store.migrate()  # already at the newest revision: nothing to do
    with store.write_engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
    store.close()


def test_sqlite_store_is_a_wal_file_synced_on_every_commit(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    with store.write_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    assert (tmp_path / "s.db").exists()
    with pytest.raises(ValueError, match="in-memory"):
        Store("sqlite://")


def test_recovery_fails_an_update_whose_process_died_and_returns_its_feedback(tmp_path):
    model = model_copy(tmp_path)
    service = Service(ServiceConfig(model))
    service.start(scheduler=False)
    store = service.store
    store.add_feedback([{"input": [0.0] * 64, "label": "1"}, {"input": [1.0] * 64, "label": "blank"}], None, None)
    update_id, created = store.create_update({}, None)
    assert created and store.create_update({}, None) == (update_id, False)  # one queued update at a time
    dead = f"{socket.gethostname()}:{2**22 + 12345}"  # above pid_max: no such process
    update = store.claim_update(dead, lambda i: f"u{i}-test")
    assert update is not None and update.status == "training" and store.pending_count() == 0
    (service.versions_dir / "u1-test").mkdir()  # a candidate written but never recorded
    (service.versions_dir / f".u1-test.tmp-{2**22 + 1}-abcd").mkdir()  # and one half-written
    service.recover()
    failed = store.update(update_id)
    assert failed.status == "failed" and "stopped" in failed.error
    assert store.pending_count() == 2  # the feedback goes back to the next update
    assert sorted(p.name for p in service.versions_dir.iterdir()) == ["v1"]
    assert store.current_version() == 1
    service.stop()


def test_a_store_made_for_another_model_is_refused(tmp_path):
    from lifelong.checkpoint import CheckpointError, load_model, save_model

    model = model_copy(tmp_path)
    first = Service(ServiceConfig(model))
    first.start(scheduler=False)
    first.stop()
    saved = load_model(model)  # another model at the same place: its labels are named differently
    saved.spec.labels = [f"digit {c}" for c in range(8)]
    save_model(model, saved.model, saved.strategy, saved.spec, saved.guards, overwrite=True)
    with pytest.raises(CheckpointError, match="belong to another model"):
        Service(ServiceConfig(model)).start(scheduler=False)


def test_gate_boundaries_and_report():
    equal = decide([0.9, 0.5], [0.89, 0.5], ["a", "new"], [100, 10], tolerance=0.01)
    assert equal["passed"] and [c["passed"] for c in equal["checks"]] == [True, True]
    worse_new = decide([0.9, 0.5], [0.95, 0.4], ["a", "new"], [100, 10])
    assert not worse_new["passed"] and "new feedback (held out, 10 examples)" in worse_new["failed"][0]
    assert worse_new["accuracy_matrix"] == {"rows": ["current", "candidate"], "columns": ["a", "new"],
                                            "values": [[0.9, 0.5], [0.95, 0.4]]}
    strict = decide([0.9, 0.5], [0.899, 0.5], ["a", "new"], [100, 10], tolerance=0.0)
    assert not strict["passed"] and strict["checks"][0]["threshold"] == 0.9
    with pytest.raises(ValueError):
        decide([0.9], [0.9, 0.1], ["a"], [1])


def test_holdout_split_is_deterministic_and_leaves_something_on_each_side():
    labels = ["a"] * 10 + ["b"] * 3 + ["c"]
    train, held = split_holdout(labels, 0.2, seed=3)
    assert (train, held) == split_holdout(labels, 0.2, seed=3)
    assert sorted(train + held) == list(range(14))
    assert sum(labels[i] == "a" for i in held) == 2 and sum(labels[i] == "b" for i in held) == 1
    assert all(labels[i] != "c" for i in held)  # a label seen once is trained on
    assert split_holdout(["x", "y"], 0.9) in (([0], [1]), ([1], [0]))
    assert split_holdout(["x", "x"], 0.99)[0]  # never everything held out


def test_an_update_trains_the_same_candidate_whatever_the_global_random_state(tmp_path):
    """A new label's row in the head starts from the update's seed, not from the process's random state
    (torch seeds each process differently), so a gate's decision is the same when the update runs again."""
    import torch
    from service_util import digits_parts, examples

    from lifelong.checkpoint import load_model
    from lifelong.service.worker import UpdateSettings, featurize, train_candidate

    path = model_copy(tmp_path)
    feedback = examples(digits_parts()["blank"], "blank", count=20)
    weights = []
    for state in (1, 2):
        parent = load_model(path)
        torch.manual_seed(state)
        x = featurize(parent.spec, [e["input"] for e in feedback])
        candidate = train_candidate(parent, x, [e["label"] for e in feedback], list(range(20)),
                                    UpdateSettings(epochs=2), seed=7)
        weights.append(candidate.model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
