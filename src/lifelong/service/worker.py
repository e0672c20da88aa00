"""One update, in its own process: train a candidate from the current version on the new feedback,
gate it, write its files, then commit the row that makes it a version (and, if it passed, current).

The serving process starts `python -m lifelong.service.worker` for each update, so predictions are
answered by the current version while this trains (at a lower CPU priority, on one thread). The
worker dies with its parent (PR_SET_PDEATHSIG): a killed service leaves no orphan training, and the
next start marks the update failed and gives its feedback back.

First the screens (screening.py) look at the feedback with the current version's model: what they
flag is held for a maintainer and never reaches the learner. The candidate trains through the
library's `Learner` on a task stream of the learned tasks (their guard sets, nothing to train on)
plus one new task: the kept feedback's training part, with its held-out part as test set. Labels
never seen before widen the output layer first (`ContinualClassifier.grow`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lifelong.checkpoint import ModelSpec, SavedModel
from lifelong.config import Config
from lifelong.data.task import ArrayDataset, Task, TaskStream
from lifelong.learner import Learner, LearnerConfig, TrainingDiverged
from lifelong.models import ContinualClassifier
from lifelong.screening import ScreenConfig
from lifelong.service.gate import decide, split_holdout
from lifelong.service.inputs import model_inputs
from lifelong.service.screening import Screened, screen_feedback
from lifelong.service.versions import LocalVersions, VersionStore, open_versions
from lifelong.strategies import build_strategy
from lifelong.strategies.base import Strategy

if TYPE_CHECKING:
    from lifelong.service.store import Store

DB_ENV = "LIFELONG_SERVICE_DB"  # the database URL reaches the worker here, not on its command line


@dataclass
class UpdateSettings(Config):
    """How an update trains and is gated; resolved when it is queued and stored with it."""

    strategy: str = "ewc+replay"
    options: dict[str, Any] | None = None  # for a strategy started fresh (another than the current one's)
    epochs: int = 10
    lr: float | None = None  # None: the model's own learning rate
    batch_size: int = 32
    holdout: float = 0.2
    tolerance: float = 0.01
    guard_size: int = 200
    screening: dict[str, Any] | None = None  # a `ScreenConfig` as a dict; None: feedback is not screened


@dataclass
class Candidate:
    """A trained candidate with everything needed to save it, and its update report."""

    model: ContinualClassifier
    strategy: Strategy
    spec: ModelSpec
    guards: list[tuple[Tensor, Tensor]]
    report: dict[str, Any]


def featurize(spec: ModelSpec, inputs: Sequence[Any]) -> Tensor:
    """Stored feedback inputs -> model inputs (text through the on-disk embedding cache)."""
    if spec.input["kind"] == "text":
        from lifelong.encoders import EmbeddingCache

        return EmbeddingCache().embed([str(t) for t in inputs])
    if spec.input["kind"] == "tokens":
        from lifelong.encoders import hf_folder, tokenize

        return tokenize([str(t) for t in inputs], spec.input["max_tokens"], hf_folder(spec.input["encoder"]))
    return model_inputs(spec.input, inputs)  # arrays, or pictures decoded as the service checked them


def _stream(spec: ModelSpec, guards: Sequence[tuple[Tensor, Tensor]], new: Task, num_classes: int) -> TaskStream:
    base = spec.stream(guards)
    return TaskStream([*base.tasks, new], num_classes, spec.scenario, "update", None)


def train_candidate(parent: SavedModel, x: Tensor, labels: Sequence[str], ids: Sequence[int],
                    settings: UpdateSettings, name: str = "update", seed: int = 0,
                    always_train: Sequence[int] = (), heldout: Sequence[int] | None = None) -> Candidate:
    """Train a candidate from `parent` (modified in place) on feedback inputs `x` with `labels`; evaluate
    it and the parent on every guard set and the held-out feedback, and gate it. Positions in
    `always_train` (examples a maintainer approved) are trained on, never held out, unless nothing
    else could be; `heldout` names the held-out positions instead of `split_holdout`'s draw (two
    candidates compared on the same examples). Raises `TrainingDiverged` if the loss stops being finite."""
    spec = parent.spec
    known = list(spec.labels)
    new_labels = list(dict.fromkeys(label for label in labels if label not in known))
    all_labels = known + new_labels
    index = {label: i for i, label in enumerate(all_labels)}
    y = torch.tensor([index[label] for label in labels], dtype=torch.long)
    if heldout is None:
        train, held = split_holdout(list(labels), settings.holdout, seed)
    else:
        held = sorted(set(heldout))
        train = [i for i in range(len(labels)) if i not in set(held)]
    forced = set(always_train)
    if any(i not in forced for i in held):
        train, held = sorted(train + [i for i in held if i in forced]), [i for i in held if i not in forced]
    train_t, held_t = torch.tensor(train, dtype=torch.long), torch.tensor(held, dtype=torch.long)
    round_classes = tuple(sorted(set(y.tolist())))
    position = len(spec.tasks)
    train_data, held_data = ArrayDataset(x[train_t], y[train_t]), ArrayDataset(x[held_t], y[held_t])
    cfg = LearnerConfig(**{k: v for k, v in spec.learner.items() if k in {f.name for f in fields(LearnerConfig)}})
    cfg = replace(cfg, epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr or cfg.lr, seed=seed,
                  device="cpu", autocast="none")  # updates train on the CPU, whatever the run that made the model

    # the current version on the same sets: labels it has never seen cannot be predicted, so count as wrong
    known_round = tuple(c for c in round_classes if c < len(known))
    view = _stream(spec, parent.guards, Task(position, held_data, held_data, known_round, name), len(known))
    current = Learner(parent.model, parent.strategy, cfg).evaluate(view, position=position)

    carried = settings.strategy == spec.strategy
    if carried:
        strategy, options = parent.strategy, dict(spec.strategy_options)
    else:
        options = dict(settings.options or {})
        strategy = build_strategy(settings.strategy, options)
    model = parent.model
    with torch.random.fork_rng(devices=[]):  # the new rows' initial weights and dropout: the same for a seed
        torch.manual_seed(seed)
        model.grow(len(all_labels), position + 1)
        stream = _stream(spec, parent.guards, Task(position, train_data, held_data, round_classes, name),
                         len(all_labels))
        learner = Learner(model, strategy, cfg)
        started = time.perf_counter()
        stats = learner.fit(stream, position)
        seconds = time.perf_counter() - started
        candidate = learner.evaluate(stream)

    names = [t.get("name") or f"task {t['id']}" for t in spec.tasks] + [f"{name} (held-out feedback)"]
    sizes = [len(gy) for _, gy in parent.guards] + [len(held)]
    report = decide(current, candidate, names, sizes, settings.tolerance)
    learned = {c for t in spec.tasks for c in t["classes"]}
    report["feedback"] = {
        "examples": len(labels), "train_ids": [ids[i] for i in train], "heldout_ids": [ids[i] for i in held],
        "new_labels": [label for label in dict.fromkeys(labels) if index[label] not in learned],
        "labels": {label: list(labels).count(label) for label in dict.fromkeys(labels)}}
    report["training"] = {"strategy": settings.strategy, "options": options, "carried_state": carried,
                          "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size, "steps": stats["steps"],
                          "loss": stats["loss"], "seconds": round(seconds, 3)}
    report["candidate"] = {"tasks": position + 1, "classes": len(all_labels), "classes_added": new_labels}
    tasks = [*spec.tasks, {"id": position, "name": name, "classes": list(round_classes)}]
    new_spec = replace(spec, labels=all_labels, tasks=tasks, strategy=settings.strategy, strategy_options=options,
                       history={"update": name, "feedback_ids": report["feedback"]["train_ids"],
                                "heldout_ids": report["feedback"]["heldout_ids"]})
    guards = [*parent.guards, (held_data.x[: settings.guard_size], held_data.y[: settings.guard_size])]
    return Candidate(model, strategy, new_spec, guards, report)


def run_update(store: Store, versions: VersionStore | Path, update_id: int, owner: str) -> str:
    """Carry out a claimed update end to end; returns its final status. `versions`: the version store
    (a folder, or `lifelong.service.versions` for a URL)."""
    if isinstance(versions, Path):
        versions = LocalVersions(versions)
    update = store.update(update_id)
    if update is None or update.owner != owner or update.status != "training":
        return "failed"
    version = store.version(update.parent_version or 0)
    if version is None or update.candidate_path is None:
        store.fail_update(update_id, f"version {update.parent_version} is not in the store", owner)
        return "failed"
    settings = UpdateSettings.from_dict(update.options)
    parent = versions.load(version.path)
    rows = store.feedback(update_id=update_id)
    x = featurize(parent.spec, [r.input for r in rows])
    history = {"parent_version": version.number, "update_id": update_id}
    screened = Screened()
    if settings.screening is not None:  # before training: the parent is trained in place
        screened = screen_feedback(parent, x, rows, ScreenConfig.from_dict(settings.screening))
    keep = [i for i, r in enumerate(rows) if r.id not in screened.held]
    if len(keep) < 2:
        failed = [f"the screens held {len(screened.held)} of {len(rows)} feedback examples; {len(keep)} left is too "
                  "few to train and gate a candidate (they wait for the next update)"]
        return store.finish_without_candidate(update_id, owner, {
            "update_id": update_id, "parent_version": version.number, "passed": False, "failed": failed,
            "reason": failed[0], "screening": screened.report}, screened.held)
    kept = [rows[i] for i in keep]
    config = ScreenConfig.from_dict(settings.screening) if settings.screening is not None else None
    influence: dict[str, Any] | None = None
    try:
        args = (parent, x[torch.tensor(keep, dtype=torch.long)], [r.label for r in kept], [r.id for r in kept],
                settings)
        approved = [k for k, r in enumerate(kept) if r.status == "approved"]
        if config is not None and config.influence:
            from lifelong.service.influence import train_with_influence  # it imports this module

            checked = train_with_influence(*args, config, f"update {update_id}", update_id, approved)
            candidate, influence = checked.candidate, checked.report
            screened.add(kept, checked.held)
        else:
            candidate = train_candidate(*args, f"update {update_id}", seed=update_id, always_train=approved)
    except TrainingDiverged as exc:
        store.fail_update(update_id, f"training diverged: {exc}", owner)
        return "failed"
    if not store.set_status(update_id, "evaluating", owner):
        return "failed"
    report: dict[str, Any] = {"update_id": update_id, "parent_version": version.number, **candidate.report}
    if settings.screening is not None:
        report["screening"] = screened.report
    if influence is not None:
        report["influence"] = influence
    candidate.spec.history.update(history)
    versions.save(update.candidate_path, candidate.model, candidate.strategy, candidate.spec, candidate.guards,
                  extra={"report.json": report})
    status, _ = store.finish_update(update_id, owner, report, bool(report["passed"]),
                                    report["feedback"]["train_ids"], screened.held)
    if status == "failed":  # the update was taken from us (the service restarted): its files are not a version
        versions.remove(update.candidate_path)
    return status


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (and exit if it already has)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lifelong.service.worker", description=__doc__)
    parser.add_argument("--update", type=int, required=True)
    parser.add_argument("--versions-dir", required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--trust-code", action="store_true", help="load networks built by module:function factories")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)
    os.nice(args.nice)  # predictions first: the service's own threads keep their priority
    torch.set_num_threads(1)
    from lifelong.service.store import Store

    store = Store(os.environ[DB_ENV])
    try:
        versions = open_versions(args.versions_dir, trust_code=args.trust_code)
        status = run_update(store, versions, args.update, args.owner)
    except Exception as exc:
        store.fail_update(args.update, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}", args.owner)
        raise
    finally:
        store.close()
    print(f"lifelong worker: update {args.update} {status}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
