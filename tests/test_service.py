"""The service as a client sees it: a real `lifelong serve` on a free port of 127.0.0.1, a real SQLite file
(and, for the storage tests, a real PostgreSQL server started from Debian's package), real HTTP."""

from __future__ import annotations

import re
import time

import pytest
from service_util import (
    Server,
    add_key,
    classes_of,
    digits_parts,
    examples,
    model_copy,
    new_database,
    postgres_cluster,
    wait_update,
)
from sqlalchemy import func, select

from lifelong.checkpoint import load_model
from lifelong.service.database import default_url, default_versions_dir
from lifelong.service.store import Store
from lifelong.service.tables import Audit, Feedback, Update, Version

ROLES = ("reader", "contributor", "maintainer")


@pytest.fixture(scope="session")
def postgres():
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    """A fresh store: an SQLite file beside the model, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return default_url(tmp_path / "digits")
    return new_database(request.getfixturevalue("postgres"))


def accuracy(client, data, label_of=lambda y: str(int(y)), task=None):
    body = {"inputs": data.x.tolist(), **({"task": task} if task is not None else {})}
    reply = client.post("/predict", json=body)
    assert reply.status_code == 200, reply.text
    got = reply.json()
    hits = sum(p["label"] == label_of(y) for p, y in zip(got["predictions"], data.y, strict=True))
    return hits / len(data), got["version"]


def test_full_flow_predict_feedback_update_versions_rollback_metrics(tmp_path, store_url):
    model, parts = model_copy(tmp_path), digits_parts()
    keys = {role: add_key(store_url, role) for role in ROLES}
    with Server(model, store_url) as server, server.client(keys["maintainer"]) as admin:
        assert admin.get("/health").json() == {"status": "ok", "version": 1}
        old_before, version = accuracy(admin, parts["test"])
        assert version == 1 and old_before > 0.85

        # more images of the known digits, and blank scans under a label the model has never seen
        sent = examples(parts["more"], count=200) + examples(parts["blank"], "blank", count=80)
        with server.client(keys["contributor"]) as contributor:
            reply = contributor.post("/feedback", json={"examples": sent, "source": "test"})
        assert reply.status_code == 202, reply.text
        ids = reply.json()["ids"]
        assert reply.json()["accepted"] == len(ids) == 280
        stored = Store(store_url).feedback(ids)  # stored before the reply: read straight from the database
        assert [(f.label, f.input) for f in stored] == [(e["label"], e["input"]) for e in sent]

        created = admin.post("/updates")
        assert created.status_code == 202, created.text
        info = admin.get(f"/updates/{created.json()['update_id']}").json()
        assert info["status"] in ("queued", "training", "evaluating", "promoted")
        # predictions keep coming from version 1 while the update trains in its own process
        assert admin.post("/predict", json={"inputs": parts["test"].x[:3].tolist()}).json()["version"] in (1, 2)
        info = wait_update(admin, created.json()["update_id"])
        assert info["status"] == "promoted", info
        report = info["report"]
        assert report["passed"] and not report["failed"]
        assert report["accuracy_matrix"]["rows"] == ["current", "candidate"]
        assert len(report["accuracy_matrix"]["columns"]) == 3  # two guard tasks and the held-out feedback
        assert all(check["passed"] for check in report["checks"])
        assert report["feedback"]["new_labels"] == ["blank"]
        learned = report["feedback"]["train_ids"]
        assert set(learned) | set(report["feedback"]["heldout_ids"]) == set(ids)

        old_after, version = accuracy(admin, parts["test"])
        assert version == 2 and old_after >= old_before - 0.01
        blank_accuracy, _ = accuracy(admin, parts["blank"].subset(range(200, 300)), lambda y: "blank")
        assert blank_accuracy > 0.9

        listing = admin.get("/versions").json()
        assert listing["current"] == 2 and [v["number"] for v in listing["versions"]] == [1, 2]
        v2 = admin.get("/versions/2").json()
        assert v2["parent"] == 1 and v2["feedback_ids"] == learned and v2["report"]["passed"]
        assert "blank" in v2["model"]["labels"] and len(v2["model"]["tasks"]) == 3

        rolled = admin.post("/rollback", json={"version": 1})
        assert rolled.status_code == 200 and rolled.json()["current"]
        _, version = accuracy(admin, parts["test"])  # immediately answered by version 1 again
        assert version == 1 and admin.get("/health").json()["version"] == 1
        assert admin.post("/rollback", json={"version": 2}).status_code == 200  # and forward again

        metrics = admin.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert 'lifelong_updates_total{status="promoted"} 1.0' in text
        assert "lifelong_current_version 2.0" in text and "lifelong_feedback_stored_total 280.0" in text
        assert re.search(r'lifelong_http_requests_total\{method="POST",route="/predict",status="200"\} \d', text)
        assert "lifelong_http_request_seconds_bucket" in text and "lifelong_predictions_total" in text

    store = Store(store_url)
    with store.read() as s:
        actions = [a.action for a in s.scalars(select(Audit).order_by(Audit.id))]
    assert actions.count("key.add") == 3 and "feedback.add" in actions and "update.create" in actions
    assert "update.promoted" in actions and actions.count("version.rollback") == 2


def test_roles_401_without_or_with_a_bad_key_403_with_a_lower_role(tmp_path, capsys):
    from lifelong.cli import main

    model = model_copy(tmp_path)
    db = default_url(model)

    def cli(*args):  # `lifelong keys ...`, in this process (a subprocess would import torch again)
        capsys.readouterr()
        assert main(["keys", *args, "--model", str(model)]) == 0
        return capsys.readouterr().out

    keys = {role: add_key(db, role) for role in ("reader", "contributor")}
    match = re.fullmatch(r"key (\d+) \((\w+)\): (\S+)\n", cli("add", "--role", "maintainer", "--name", "ops"))
    assert match and match.group(2) == "maintainer"
    maintainer_id, keys["maintainer"] = int(match.group(1)), match.group(3)
    listing = cli("list")
    assert all(role in listing for role in ROLES) and "ops" in listing and not any(k in listing for k in keys.values())
    stored = {k.key_hash for k in Store(db).api_keys()}
    assert not any(k in stored for k in keys.values())  # only hashes

    x = digits_parts()["test"].x[:1].tolist()
    calls = [("POST", "/predict", {"inputs": x}, "reader"), ("GET", "/versions", None, "reader"),
             ("GET", "/versions/1", None, "reader"), ("GET", "/updates/1", None, "reader"),
             ("GET", "/metrics", None, "reader"),
             ("POST", "/feedback", {"examples": [{"input": x[0], "label": "3"}]}, "contributor"),
             ("POST", "/updates", None, "maintainer"), ("POST", "/versions/1/promote", None, "maintainer"),
             ("POST", "/rollback", {"version": 1}, "maintainer")]
    with Server(model) as server, server.client() as anonymous:
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/docs").status_code == 200  # the OpenAPI page, no key needed to read it
        assert "/rollback" in anonymous.get("/openapi.json").json()["paths"]
        for method, path, body, needed in calls:
            assert anonymous.request(method, path, json=body).status_code == 401, path
            bad = anonymous.request(method, path, json=body, headers={"X-API-Key": "ll_not-a-key"})
            assert bad.status_code == 401 and "unknown" in bad.json()["detail"]
            for role in ROLES:
                reply = anonymous.request(method, path, json=body, headers={"Authorization": f"Bearer {keys[role]}"})
                if ROLES.index(role) < ROLES.index(needed):
                    assert reply.status_code == 403 and needed in reply.json()["detail"], (path, role)
                else:
                    assert reply.status_code not in (401, 403), (path, role, reply.text)
        assert f"key {maintainer_id} revoked" in cli("revoke", str(maintainer_id))
        time.sleep(2.5)  # the key cache lives two seconds
        assert anonymous.get("/versions", headers={"X-API-Key": keys["maintainer"]}).status_code == 401
        assert anonymous.get("/versions", headers={"X-API-Key": keys["reader"]}).status_code == 200


def test_gate_rejects_a_forgetting_candidate_and_promotes_one_that_does_not(tmp_path):
    model, parts = model_copy(tmp_path), digits_parts()
    key = add_key(default_url(model), "maintainer")
    with Server(model) as server, server.client(key) as c:
        # corrections of digits 0-3 only; naive fine-tuning at a high learning rate forgets digits 4-7
        corrections = examples(classes_of(parts["more"], [0, 1, 2, 3]), count=150)
        assert c.post("/feedback", json={"examples": corrections}).status_code == 202
        update = c.post("/updates", json={"strategy": "naive", "lr": 0.05, "epochs": 20}).json()["update_id"]
        info = wait_update(c, update)
        assert info["status"] == "rejected", info
        report = info["report"]
        forgotten = [ch for ch in report["checks"] if not ch["passed"]]
        assert forgotten and forgotten[0]["name"] == "classes 4,5,6,7"
        assert forgotten[0]["candidate"] < forgotten[0]["current"] - 0.5
        assert 'guard "classes 4,5,6,7": candidate 0.' in report["failed"][0]
        assert report["training"]["strategy"] == "naive" and not report["training"]["carried_state"]

        rejected = info["candidate_version"]
        assert c.get("/health").json()["version"] == 1
        kept = c.get(f"/versions/{rejected}").json()
        assert kept["status"] == "rejected" and not kept["current"] and kept["report"]["failed"]
        row = Store(default_url(model)).version(rejected)
        load_model(default_versions_dir(model) / row.path)  # kept whole, for inspection
        refused = c.post("/rollback", json={"version": rejected})
        assert refused.status_code == 409 and "never promoted" in refused.json()["detail"]

        # more images of every known digit and blank scans: EWC + replay learns them without forgetting
        sent = examples(parts["more"], count=200) + examples(parts["blank"], "blank", count=80)
        assert c.post("/feedback", json={"examples": sent}).status_code == 202
        info = wait_update(c, c.post("/updates").json()["update_id"])
        assert info["status"] == "promoted", info["report"]
        assert info["report"]["training"]["carried_state"] and info["parent_version"] == 1
        assert c.get("/health").json()["version"] == info["candidate_version"]


def test_bad_input_gets_4xx_with_a_message_and_stores_nothing(tmp_path, store_url):
    model = model_copy(tmp_path)
    key = add_key(store_url, "maintainer")
    row = digits_parts()["test"].x[0].tolist()
    good = {"input": row, "label": "3"}
    big = {"examples": [good] * 200}  # about 90 kB, over the limit below
    cases = [
        ("/predict", {"inputs": [[1.0, 2.0]]}, "shape"),
        ("/predict", {"inputs": ["a string"]}, "nested lists"),
        ("/predict", b'{"inputs": [[[NaN, 1]]]}', "finite"),
        ("/predict", b'{"inputs": [[[Infinity]]]}', "finite"),
        ("/predict", {"inputs": [[[True] * 8] * 8]}, "bool"),
        ("/predict", {"inputs": [[[1, 2], [3]]]}, "rectangular"),
        ("/predict", {"inputs": []}, "at least 1"),
        ("/predict", {"inputs": [row], "task": 7}, "unknown task"),
        ("/predict", {"inputs": [row], "task": -1}, "greater than or equal"),
        ("/predict", {"inputs": [row], "extra": 1}, "Extra inputs"),
        ("/predict", {}, "Field required"),
        ("/predict", b"{not json", "JSON"),
        ("/feedback", {"examples": []}, "at least 1"),
        ("/feedback", {"examples": [{**good, "label": ""}]}, "at least 1 character"),
        ("/feedback", {"examples": [{**good, "label": "   "}]}, "at least 1 character"),
        ("/feedback", {"examples": [{**good, "label": 3}]}, "valid string"),
        ("/feedback", {"examples": [good, {**good, "input": [1.0]}]}, "example 1"),
        ("/feedback", b'{"examples": [{"input": [NaN], "label": "3"}]}', "finite"),
        ("/feedback", {"examples": [{**good, "task": 5}]}, "unknown task"),
        ("/feedback", {"examples": [{"input": row}]}, "Field required"),
        ("/feedback", {"examples": [good], "source": "x" * 201}, "at most 200"),
        ("/feedback", big, "larger than the limit"),
        ("/updates", {"strategy": "dream"}, "unknown strategy"),
        ("/updates", {"options": {"memory": 5}}, "started fresh"),
        ("/updates", {"epochs": 0}, "greater than or equal"),
        ("/updates", b'{"lr": NaN}', "lr"),
        ("/updates", None, "at least 2 pending"),
        ("/rollback", {"version": 99}, "no version 99"),
        ("/rollback", {"version": "one"}, "valid integer"),
        ("/versions/99/promote", None, "no version 99"),
    ]
    with Server(model, store_url, "--max-body-bytes", "65536") as server, server.client(key) as c:
        for path, body, message in cases:
            if isinstance(body, bytes):
                reply = c.post(path, content=body, headers={"content-type": "application/json"})
            else:
                reply = c.post(path, json=body)
            assert 400 <= reply.status_code < 500 and message in reply.text, (path, body, reply.text)
        chunked = c.post("/feedback", content=(b" " * 1024 for _ in range(100)),
                         headers={"content-type": "application/json"})  # no length: stopped while reading
        assert chunked.status_code == 413
        for path in ("/updates/999", "/versions/99", "/updates/0", "/updates/abc", "/versions/99999999999999999999"):
            reply = c.get(path)
            assert reply.status_code in (404, 422), (path, reply.text)
        assert c.get("/health").json()["version"] == 1

    store = Store(store_url)
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Feedback)) == 0
        assert s.scalar(select(func.count()).select_from(Update)) == 0
        assert s.scalar(select(func.count()).select_from(Version)) == 1
        assert {a.action for a in s.scalars(select(Audit))} == {"key.add", "version.bootstrap"}


def test_auto_update_starts_a_round_every_k_examples(tmp_path):
    model, parts = model_copy(tmp_path), digits_parts()
    key = add_key(default_url(model), "maintainer")
    with Server(model, None, "--auto-update", "100") as server, server.client(key) as c:
        assert c.post("/feedback", json={"examples": examples(parts["more"], count=60)}).status_code == 202
        time.sleep(1)
        assert Store(default_url(model)).updates() == []  # 60 < 100: nothing yet
        sent = examples(parts["more"], start=60, count=60)
        assert c.post("/feedback", json={"examples": sent}).status_code == 202
        deadline = time.monotonic() + 10
        while not Store(default_url(model)).updates() and time.monotonic() < deadline:
            time.sleep(0.2)
        updates = Store(default_url(model)).updates()
        assert len(updates) == 1
        info = wait_update(c, updates[0].id)
        assert info["status"] in ("promoted", "rejected") and info["report"]["feedback"]["examples"] == 120


def test_two_service_processes_share_one_postgresql_store(tmp_path, postgres):
    model, parts = model_copy(tmp_path), digits_parts()
    url = new_database(postgres)
    key = add_key(url, "maintainer")
    with Server(model, url, log=tmp_path / "a.log") as a, Server(model, url, log=tmp_path / "b.log") as b, \
            a.client(key) as ca, b.client(key) as cb:
        sent = examples(parts["more"], count=200) + examples(parts["blank"], "blank", count=80)
        ids_a = ca.post("/feedback", json={"examples": sent[:140]}).json()["ids"]
        ids_b = cb.post("/feedback", json={"examples": sent[140:]}).json()["ids"]
        assert not set(ids_a) & set(ids_b)
        info = wait_update(cb, cb.post("/updates").json()["update_id"])  # whichever process runs it
        assert info["status"] == "promoted" and info["report"]["feedback"]["examples"] == 280
        deadline = time.monotonic() + 5
        while ca.get("/health").json()["version"] != 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the other process follows the pointer in the store
        assert ca.get("/health").json()["version"] == cb.get("/health").json()["version"] == 2
        assert ca.post("/rollback", json={"version": 1}).status_code == 200
        deadline = time.monotonic() + 5
        while cb.get("/health").json()["version"] != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cb.post("/predict", json={"inputs": parts["test"].x[:2].tolist()}).json()["version"] == 1
