"""What separates lifelong's default EWC from a controlled probe and from Avalanche's: named variants of
diagonal EWC, several seeds, on 5-task Permuted Fashion-MNIST (MLP 784-400-400-10, Adam 1e-3, batch 128,
1 epoch, no dropout: the peer's own ground; issue 18). Variants of kfac-ewc and gpm run on the same ground.

    python benchmarks/ewc_diagonal.py --variants naive,ewc --seeds 0,1,2 --threads 1
    python benchmarks/ewc_diagonal.py --split valid --variants ewc-exact-30,ewc-exact-100 --out results/x.json

Each variant changes one thing against `ewc` (the library's defaults): the Fisher (whole task or a
sample budget; empirical, sampled, exact or batched), the strength, the optimizer kept across tasks
(what Avalanche's strategies do) or EWC written as a sum of per-task penalties instead of the merged
quadratic. `--split valid` trains on the first 90 % of each task and scores on the last 10 % (for
choosing; the test set is not read); `--split test` trains on all of it and scores on the test set.
Every run goes to the JSON file as it finishes (`--resume` skips the ones already there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from lifelong.data import StreamConfig, build_stream
from lifelong.evaluation import AccuracyMatrix
from lifelong.importance import fisher_diagonal
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import MLP, ContinualClassifier
from lifelong.reporting import environment, write_json
from lifelong.strategies import EWC, EWCConfig, build_strategy
from lifelong.strategies.base import trainable

ROOT = Path(__file__).resolve().parent.parent


def _v(strategy: str = "ewc", keep_optimizer: bool = False, per_task: bool = False, dropout: float = 0.0,
       **options: Any) -> dict:
    return {"strategy": strategy, "options": options, "keep_optimizer": keep_optimizer, "per_task": per_task,
            **({"dropout": dropout} if dropout else {})}


VARIANTS: dict[str, dict[str, Any]] = {
    "naive": _v("naive"),
    "naive-kept-adam": _v("naive", keep_optimizer=True),
    "ewc": _v(),  # the library's defaults (empirical per-sample Fisher, 1,024 samples, strength 1,000)
    # these three ran when the default strength was 300: pinned, so that their rows keep their meaning
    "ewc-1000-samples": _v(samples=1000, strength=300.0),
    "ewc-per-task-sum": _v(per_task=True, strength=300.0),
    "ewc-kept-adam": _v(keep_optimizer=True, strength=300.0),
    "ewc-kept-adam-batched-1000": _v(keep_optimizer=True, fisher="batched", strength=1000.0),  # Avalanche's EWC
    "ewc-kept-adam-exact-100": _v(keep_optimizer=True, fisher="exact", strength=100.0),
    "ewc-kept-adam-exact-300": _v(keep_optimizer=True, fisher="exact", strength=300.0),
    # Avalanche's SimpleMLP has dropout 0.5 unless told otherwise
    "ewc-dropout-0.5": _v(dropout=0.5),
    "ewc-kept-adam-batched-1000-dropout-0.5": _v(keep_optimizer=True, fisher="batched", strength=1000.0, dropout=0.5),
}
for _s in (10, 30, 100, 300, 1000, 3000):
    VARIANTS[f"ewc-{_s}"] = _v(strength=float(_s))
    VARIANTS[f"ewc-exact-{_s}"] = _v(fisher="exact", strength=float(_s))
    VARIANTS[f"ewc-true-{_s}"] = _v(fisher="true", strength=float(_s))
    VARIANTS[f"ewc-1000-samples-{_s}"] = _v(samples=1000, strength=float(_s))
    VARIANTS[f"ewc-exact-1000-samples-{_s}"] = _v(fisher="exact", samples=1000, strength=float(_s))
    # Adam kept across tasks, the default Fisher
    VARIANTS[f"ewc-kept-adam-{_s}-strength"] = _v(keep_optimizer=True, strength=float(_s))
for _s in (1000, 3000, 10000, 30000, 100000):
    VARIANTS[f"ewc-batched-{_s}"] = _v(fisher="batched", strength=float(_s))
for _s in (10, 30, 100, 300, 1000):  # beyond the diagonal, on the same ground
    VARIANTS[f"kfac-ewc-{_s}"] = _v("kfac-ewc", strength=float(_s))
    VARIANTS[f"online-kfac-ewc-{_s}"] = _v("online-kfac-ewc", strength=float(_s))
    for _e in (0.9, 0.95, 0.99):
        VARIANTS[f"kfac-ewc-{_s}-energy-{_e}"] = _v("kfac-ewc", strength=float(_s), energy=_e)
        VARIANTS[f"online-kfac-ewc-{_s}-energy-{_e}"] = _v("online-kfac-ewc", strength=float(_s), energy=_e)
    for _r in (8, 16, 32, 64):  # the step's rank cap (flat cost however many tasks merged)
        VARIANTS[f"online-kfac-ewc-{_s}-rank-{_r}"] = _v("online-kfac-ewc", strength=float(_s), rank=_r)
for _t in (0.9, 0.95, 0.97, 0.99):
    # projected gradients, the paper's form (the library's default when the probe files' gpm-N rows were run)
    VARIANTS[f"gpm-{_t}"] = _v("gpm", threshold=_t, project="gradient")
    VARIANTS[f"gpm-update-{_t}"] = _v("gpm", threshold=_t, project="update")


class PerTaskEWC(EWC):
    """EWC as Kirkpatrick et al. wrote it: one penalty per earlier task, each with its own Fisher and
    anchor, summed at every step (memory and time grow with the tasks; the library merges them)."""

    def __init__(self, config: EWCConfig):
        super().__init__(config)
        self.terms: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []

    def after_task(self, model, task_id, batches) -> None:
        cfg = self.config
        fisher = fisher_diagonal(model, batches, fisher=cfg.fisher, max_samples=cfg.samples,
                                 generator=self.generator, batch_size=cfg.fisher_batch)
        self.terms.append((fisher, {n: p.detach().clone() for n, p in trainable(model).items()}))

    @torch.no_grad()
    def after_backward(self, model) -> None:
        params = trainable(model)
        for fisher, anchor in self.terms:
            for n, f in fisher.items():
                grad = params[n].grad
                if grad is not None:  # a parameter this loss did not reach
                    grad.add_(f * (params[n] - anchor[n]), alpha=self.config.strength)


def run_variant(name: str, seed: int, split: str, tasks: int, epochs: int) -> dict[str, Any]:
    spec = VARIANTS[name]
    stream = build_stream(StreamConfig("permuted-fmnist", "domain", tasks, seed=seed,
                                       validation=0.1 if split == "valid" else 0.0))
    torch.manual_seed(seed)
    model = ContinualClassifier(MLP(784, (400, 400), 10, spec.get("dropout", 0.0)), len(stream), 10)
    options = {**spec["options"], "seed": seed}
    strategy = PerTaskEWC(EWCConfig(**options)) if spec["per_task"] else build_strategy(spec["strategy"], options)
    learner = Learner(model, strategy, LearnerConfig(epochs=epochs, batch_size=128, lr=1e-3, seed=seed,
                                                     reset_optimizer=not spec["keep_optimizer"]))
    matrix = AccuracyMatrix(len(stream))
    start, start_cpu = time.perf_counter(), time.process_time()
    importance_seconds = train_seconds = train_cpu = 0.0
    for task in stream:
        c0 = time.process_time()
        stats = learner.fit(stream, task.id)
        train_cpu += time.process_time() - c0  # CPU time: on a shared machine wall time measures the others
        importance_seconds += stats["after_task_seconds"]
        train_seconds += stats["train_seconds"] + stats["after_task_seconds"]
        matrix.update(task.id, learner.evaluate(stream, split))
    return {"variant": name, "seed": seed, "split": split, "tasks": tasks, "epochs": epochs, **spec,
            "options": options, "accuracy_matrix": matrix.tolist(), **matrix.compute(),
            "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - start_cpu,
            "train_seconds": train_seconds, "train_cpu_seconds": train_cpu, "importance_seconds": importance_seconds}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        row: dict[str, Any] = {"variant": name, "seeds": [r["seed"] for r in mine]}
        for key in ("average_accuracy", "average_retention", "learning_accuracy", "seconds"):
            values = torch.tensor([r[key] for r in mine], dtype=torch.float64)
            row[key] = float(values.mean())
            row[key + "_std"] = float(values.std()) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| variant | seeds | final acc | retention | learning acc | seconds |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[k]:.3f} ± {r[k + '_std']:.3f}" for k in ("average_accuracy", "average_retention",
                                                                 "learning_accuracy")]
        lines.append(f"| {r['variant']} | {len(r['seeds'])} | {' | '.join(cells)} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="naive,ewc,ewc-1000-samples,ewc-per-task-sum,ewc-kept-adam")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--tasks", type=int, default=5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--out", help="default: results/ewc-diagonal-<split>.json")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    out = Path(args.out or ROOT / "results" / f"ewc-diagonal-{args.split}.json")
    runs = json.loads(out.read_text())["runs"] if args.resume and out.exists() else []
    done = {(r["variant"], r["seed"], r["tasks"], r["epochs"]) for r in runs}
    for name in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            if (name, seed, args.tasks, args.epochs) in done:
                continue
            r = run_variant(name, seed, args.split, args.tasks, args.epochs)
            runs.append(r)
            print(f"{name} seed {seed}: final {r['average_accuracy']:.3f} retention {r['average_retention']:.3f} "
                  f"learning {r['learning_accuracy']:.3f} ({r['seconds']:.0f} s)", flush=True)
            write_json(out, {"benchmark": "permuted-fmnist", "split": args.split, "model": "MLP 784-400-400-10",
                             "learner": replace(LearnerConfig(epochs=args.epochs)).__dict__,
                             "summary": summarise(runs), "runs": runs, "environment": environment()})
    print(table(summarise(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
