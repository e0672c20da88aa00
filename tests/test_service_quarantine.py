"""Quarantine in the service, as a client sees it: a real `lifelong serve`, a real SQLite file, real HTTP.

Six honest contributor keys send images of the digits the model knows; attacker keys plant flipped
labels and a backdoor (a bright patch, labelled 7). The update screens its feedback first: what the
screens flag is held, listed for maintainers with reasons, and never trained on; maintainers approve
or reject it. A per-key rate limit refuses floods at intake. With the screens off, a forgetting
attack (old digits with wrong labels) is stopped by the promotion gate, and its report says so.
"""

from __future__ import annotations

import pytest
import torch
from service_util import Server, add_key, classes_of, digits_parts, examples, model_copy, wait_update
from sqlalchemy import select

from lifelong.data.task import ArrayDataset
from lifelong.service.database import default_url
from lifelong.service.store import Store
from lifelong.service.tables import Audit, Feedback

HONEST = 6


def trigger(data: ArrayDataset) -> ArrayDataset:
    x = data.x.clone()
    x[..., 5:8, 5:8] = 1.0  # a bright 3x3 patch in the bottom right corner
    return ArrayDataset(x, data.y)


def flipped(data: ArrayDataset, seed: int = 0) -> list[dict]:
    """Examples of the known digits 0-7, each labelled as another of them."""
    g = torch.Generator().manual_seed(seed)
    wrong = (data.y + 1 + torch.randint(7, (len(data),), generator=g)) % 8
    return examples(ArrayDataset(data.x, wrong))


def send(server: Server, key: str, sent: list[dict]) -> list[int]:
    with server.client(key) as c:
        reply = c.post("/feedback", json={"examples": sent})
    assert reply.status_code == 202, reply.text
    return reply.json()["ids"]


def send_honest(world: dict, start: int, count: int) -> list[int]:
    """`count` clean examples from `parts["more"]`, dealt out over the honest keys."""
    sent = examples(digits_parts()["more"], start=start, count=count)
    return [i for k, key in enumerate(world["honest"]) for i in send(world["server"], key, sent[k::HONEST])]


def statuses(db: str, ids: list[int]) -> dict[int, str]:
    return {f.id: f.status for f in Store(db).feedback(ids)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A served digits model (screens on, the defaults) with a maintainer, a reader, honest and attacker keys."""
    model = model_copy(tmp_path_factory.mktemp("quarantine"))
    db = default_url(model)
    keys = {role: add_key(db, role) for role in ("reader", "contributor", "maintainer")}
    honest = [add_key(db, "contributor") for _ in range(HONEST)]
    attackers = [add_key(db, "contributor") for _ in range(2)]
    with Server(model, None, "--update-epochs", "5") as server, server.client(keys["maintainer"]) as admin:
        yield {"server": server, "admin": admin, "db": db, "keys": keys, "honest": honest, "attackers": attackers}


@pytest.fixture(scope="module")
def poisoned(world):
    """One update on clean feedback from the honest keys, 20 flipped labels and 30 backdoored images."""
    parts = digits_parts()
    clean = send_honest(world, 0, 150)
    flips = send(world["server"], world["attackers"][0], flipped(parts["more"].subset(range(150, 170))))
    patch = trigger(classes_of(parts["more"].subset(range(170, 230)), [0, 1, 2, 3, 4, 5, 6]).subset(range(30)))
    backdoor = send(world["server"], world["attackers"][1], examples(patch, label="7"))
    info = wait_update(world["admin"], world["admin"].post("/updates").json()["update_id"])
    return {"info": info, "clean": clean, "flips": flips, "backdoor": backdoor}


def test_flipped_labels_and_a_backdoor_are_held_and_never_trained_on(world, poisoned):
    info, poison = poisoned["info"], set(poisoned["flips"] + poisoned["backdoor"])
    assert info["status"] in ("promoted", "rejected"), info
    report = info["report"]
    held = set(report["screening"]["held_ids"])
    assert held >= poison  # every planted example
    assert len(held & set(poisoned["clean"])) <= 3  # and (nearly) no honest one
    trained = set(report["feedback"]["train_ids"]) | set(report["feedback"]["heldout_ids"])
    assert not trained & held
    assert trained >= set(poisoned["clean"]) - held
    assert info["options"]["screening"]["label_noise"] and info["options"]["screening"]["backdoor"]
    version = world["admin"].get(f"/versions/{info['candidate_version']}").json()
    assert not set(version["feedback_ids"]) & poison

    # maintainers see what was held, with the screens' reasons; the store agrees
    listing = world["admin"].get("/feedback", params={"status": "held", "limit": 1000}).json()
    listed = {item["id"]: item for item in listing["items"]}
    assert set(listed) == held and listing["next_after"] is None
    assert all(item["status"] == "held" and item["reasons"] for item in listed.values())
    screens = {r["screen"] for i in poisoned["backdoor"] for r in listed[i]["reasons"]}
    assert screens and screens <= {"source-share", "label-noise", "source-outlier", "backdoor", "label-collision",
                                   "guard-agreement", "influence"}
    assert any("labelled" in r["reason"] or "disagree" in r["reason"]
               for i in poisoned["flips"] for r in listed[i]["reasons"])
    stored = statuses(world["db"], sorted(poison | set(poisoned["clean"])))
    assert all(stored[i] == "held" for i in poison)
    assert all(stored[i] == "used" for i in set(poisoned["clean"]) - held)
    paged = world["admin"].get("/feedback", params={"status": "held", "limit": 5}).json()
    assert len(paged["items"]) == 5 and paged["next_after"] == paged["items"][-1]["id"]


def test_clean_feedback_from_many_keys_passes_every_screen(world, poisoned):
    clean = send_honest(world, 230, 240)  # 40 per honest key: 30 of each digit, enough for every screen to judge
    info = wait_update(world["admin"], world["admin"].post("/updates").json()["update_id"])
    assert info["status"] == "promoted", info["report"]
    report = info["report"]
    held = report["screening"]["held_ids"]
    # honest feedback has a few odd scans; the screens hold at most one or two in a hundred of them
    assert report["screening"]["examples"] == len(clean) and len(held) <= 0.02 * len(clean)
    assert sorted(report["feedback"]["train_ids"] + report["feedback"]["heldout_ids"] + held) == clean
    assert set(statuses(world["db"], [i for i in clean if i not in held]).values()) == {"used"}


def test_one_keys_share_of_an_update_is_capped(world, poisoned):
    test = digits_parts()["test"]
    sent = examples(test, count=120)
    honest = [i for k, key in enumerate(world["honest"]) for i in send(world["server"], key, sent[k::HONEST])]
    flood = send(world["server"], world["keys"]["contributor"], examples(test, start=120, count=100))
    info = wait_update(world["admin"], world["admin"].post("/updates").json()["update_id"])
    assert info["status"] in ("promoted", "rejected"), info
    report = info["report"]
    held = set(report["screening"]["held_ids"])
    listed = {item["id"]: item for item in
              world["admin"].get("/feedback", params={"status": "held", "limit": 1000}).json()["items"]}
    capped = {i for i in held if any(r["screen"] == "source-share" for r in listed[i]["reasons"])}
    # seven sources: a key may provide twice an even share, 2/7 of what is trained on; its latest examples wait
    kept = 100 - len(capped)
    assert capped and capped <= set(flood) and max(set(flood) - capped) < min(capped)
    assert kept <= 2 / 7 * (len(honest) + kept) < kept + 1
    assert len(held & set(honest)) <= 0.05 * len(honest)


def test_maintainers_approve_or_reject_held_examples_audited_and_only_they_can(world, poisoned):
    server, admin = world["server"], world["admin"]
    first, second = poisoned["flips"][:2]
    for role in ("reader", "contributor"):
        with server.client(world["keys"][role]) as c:
            assert c.get("/feedback", params={"status": "held"}).status_code == 403
            denied = c.post(f"/feedback/{first}/approve")
            assert denied.status_code == 403 and "maintainer" in denied.json()["detail"]
            assert c.post(f"/feedback/{first}/reject").status_code == 403
    with server.client() as anonymous:
        assert anonymous.post(f"/feedback/{first}/approve").status_code == 401
    assert statuses(world["db"], [first]) == {first: "held"}  # the refused calls changed nothing

    approved = admin.post(f"/feedback/{first}/approve")
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    rejected = admin.post(f"/feedback/{second}/reject")
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert admin.post("/feedback/999999/approve").status_code == 404
    used = poisoned["clean"][0]
    refused = admin.post(f"/feedback/{used}/reject")
    assert refused.status_code == 409 and "used" in refused.json()["detail"]

    with Store(world["db"]).read() as s:
        audit = {a.action: a for a in s.scalars(select(Audit).where(Audit.action.like("feedback.%")))}
    sender = Store(world["db"]).feedback([first])[0].key_id
    assert audit["feedback.approve"].object == f"feedback {first}"
    assert audit["feedback.approve"].detail["from"] == "held"
    assert audit["feedback.reject"].object == f"feedback {second}"
    assert audit["feedback.approve"].key_id == audit["feedback.reject"].key_id is not None
    assert sender != audit["feedback.approve"].key_id  # an attacker's key sent it; a maintainer's approved it

    # the next update trains on the approved example (not re-screened, not held out); never on the rejected one
    send_honest(world, 470, 60)
    info = wait_update(admin, admin.post("/updates").json()["update_id"])
    assert info["status"] in ("promoted", "rejected"), info
    assert first in info["report"]["feedback"]["train_ids"] and first in info["report"]["screening"]["approved_ids"]
    assert second not in info["report"]["feedback"]["train_ids"] + info["report"]["feedback"]["heldout_ids"]
    assert statuses(world["db"], [first, second]) == {first: "used", second: "rejected"}
    assert admin.post(f"/feedback/{first}/reject").status_code == 409  # trained on: too late to refuse


def test_a_flip_sent_from_as_many_keys_as_the_honest_ones_is_held(tmp_path):
    """Colluding keys: twelve attacker keys (as many as the honest ones, three or four examples each,
    far under the share cap) send images of 3s labelled "5", more of them than the honest 5s. Per-key
    votes and per-key outliers cannot see it; the screens that look at the data (label collisions,
    guard agreement) hold it, with their reasons, and nothing held is trained on."""
    model, parts = model_copy(tmp_path), digits_parts()
    db = default_url(model)
    maintainer = add_key(db, "maintainer")
    keys = 2 * HONEST
    honest = [add_key(db, "contributor") for _ in range(keys)]
    attackers = [add_key(db, "contributor") for _ in range(keys)]
    more = parts["more"]
    threes = classes_of(more.subset(range(240, len(more))), [3]).subset(range(40))
    with Server(model, None, "--update-epochs", "5") as server, server.client(maintainer) as admin:
        sent = examples(more, count=240)
        clean = [i for k, key in enumerate(honest) for i in send(server, key, sent[k::keys])]
        flips = examples(threes, label="5")
        flipped = [i for k, key in enumerate(attackers) for i in send(server, key, flips[k::keys])]
        info = wait_update(admin, admin.post("/updates").json()["update_id"])
        assert info["status"] in ("promoted", "rejected"), info
        report = info["report"]
        held = set(report["screening"]["held_ids"])
        trained = set(report["feedback"]["train_ids"]) | set(report["feedback"]["heldout_ids"])
        assert not trained & held
        listed = {item["id"]: item for item in
                  admin.get("/feedback", params={"status": "held", "limit": 1000}).json()["items"]}
        key_blind = {"label-collision", "guard-agreement", "influence"}
        blind = {i for i in held if {r["screen"] for r in listed[i]["reasons"]} & key_blind}
        # measured: 37 of the 40 flips held by the key-blind screens, 3 of the 240 honest examples
        assert len(blind & set(flipped)) >= 0.85 * len(flipped)
        assert len(blind & set(clean)) <= 0.05 * len(clean)


def test_a_key_over_its_feedback_rate_gets_429_and_nothing_is_stored(tmp_path):
    model = model_copy(tmp_path)
    db = default_url(model)
    key, other = add_key(db, "contributor"), add_key(db, "contributor")
    sent = examples(digits_parts()["more"], count=40)
    with Server(model, None, "--feedback-rate", "20") as server, server.client(key) as c:
        assert c.post("/feedback", json={"examples": sent[:15]}).status_code == 202
        refused = c.post("/feedback", json={"examples": sent[15:25]})
        assert refused.status_code == 429
        assert "20 feedback examples a minute" in refused.json()["detail"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        never = c.post("/feedback", json={"examples": sent[:25]})  # more than a minute's worth at once
        assert never.status_code == 429 and "at most 20 per request" in never.json()["detail"]
        with server.client(other) as o:  # the limit is per key
            assert o.post("/feedback", json={"examples": sent[25:35]}).status_code == 202
    with Store(db).read() as s:
        assert len(list(s.scalars(select(Feedback)))) == 25  # 15 + 10: the refused requests stored nothing


def test_with_screens_off_the_gate_rejects_a_forgetting_attack_and_says_so(tmp_path):
    model, parts = model_copy(tmp_path), digits_parts()
    db = default_url(model)
    maintainer, attacker = add_key(db, "maintainer"), add_key(db, "contributor")
    # images of digits 0-3, which the model learned as its first task, each labelled as another of them
    old = classes_of(parts["more"], [0, 1, 2, 3]).subset(range(150))
    wrong = ArrayDataset(old.x, (old.y + 1) % 4)
    with Server(model, None, "--no-screen", "--update-epochs", "5") as server, server.client(maintainer) as admin:
        send(server, attacker, examples(wrong))
        info = wait_update(admin, admin.post("/updates").json()["update_id"])
        assert info["status"] == "rejected", info["report"]
        report = info["report"]
        assert "screening" not in report and info["options"]["screening"] is None
        failed = [c for c in report["checks"] if not c["passed"]]
        assert failed and failed[0]["check"] == "guard" and failed[0]["name"] == "classes 0,1,2,3"
        drop = 100 * (failed[0]["current"] - failed[0]["candidate"])
        assert 'guard "classes 0,1,2,3"' in report["reason"] and f"it dropped {drop:.1f} points" in report["reason"]
        assert "(a forgetting attack) is not promoted" in report["reason"]
        assert admin.get("/health").json()["version"] == 1


def test_an_update_whose_feedback_the_screens_hold_almost_wholly_makes_no_candidate(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    store.bootstrap("v1")
    ids = store.add_feedback([{"input": [0.0] * 64, "label": str(i % 3)} for i in range(3)], None, None)
    update_id, _ = store.create_update({}, None)
    assert store.claim_update("here:1", lambda i: f"u{i}").status == "training"
    reasons = [{"screen": "label-noise", "reason": "labelled '0', but ...", "score": 0.9}]
    report = {"passed": False, "failed": ["the screens held 2 of 3 ..."]}
    assert store.finish_without_candidate(update_id, "here:1", report, {ids[0]: reasons, ids[1]: reasons}) == "rejected"
    rows = {f.id: f for f in store.feedback(ids)}
    assert [rows[i].status for i in ids] == ["held", "held", "pending"] and rows[ids[0]].reasons == reasons
    assert rows[ids[2]].update_id is None and store.pending_count() == 1  # the kept one waits for the next update
    update = store.update(update_id)
    assert update.status == "rejected" and update.candidate_version is None and store.versions()[-1].number == 1
    # a maintainer's approval puts a held example back in the pool; a rejection keeps it out for good
    assert store.decide_feedback(ids[0], "approved", None).status == "approved" and store.pending_count() == 2
    assert store.decide_feedback(ids[1], "rejected", None).status == "rejected" and store.pending_count() == 2
    with pytest.raises(ValueError, match="approved or rejected"):
        store.decide_feedback(ids[1], "used", None)
    store.close()
