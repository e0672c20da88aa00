"""What Kronecker-factored EWC and gradient projection memory cost, beside the diagonal (issue 18, item 4).

    python benchmarks/consolidation_cost.py                  # every section, results/consolidation-cost.json
    python benchmarks/consolidation_cost.py --sections ab    # some; the others' saved results are kept
    python benchmarks/consolidation_cost.py --sections e     # the MiniLM encoder (needs CLINC150)

a. merge: on a small case (MLP 64-64-10, 10 tasks of permuted digits, factors at each task's solution),
   the merged Kronecker penalty against the exact sum of per-task Kronecker penalties after 2, 5 and 10
   tasks: relative Frobenius error of the precision, relative error of the penalty's gradient and value;
b. importance time on the vision MLP (784-400-400-10, 10,000 Fashion-MNIST samples in batches of 1,024):
   the diagonal Fisher of each kind, the Kronecker factors, GPM's bases (from its 300 samples);
c. training-step time as a ratio to a naive step (batch 128), with 1, 10 and 50 earlier tasks;
d. state bytes per layer after 1, 10 and 50 tasks, beside the diagonal's 8 bytes per parameter;
e. c and d on the fine-tuned MiniLM encoder of the language table (22.7M parameters, batch 32), after 1
   and 10 earlier tasks (`--text-tasks`; each earlier task's importance from 64 queries).
Timings are CPU seconds of this process (one torch thread): sections c-e time one step of each learner
in turn (the order rotating) and take the medians of the single steps; section b takes medians of
interleaved rounds. On a shared machine wall time measures the neighbours; CPU time still carries
some of their cache pressure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lifelong.data import Batch, BatchLoader, StreamConfig, TaskData, build_stream
from lifelong.importance import fisher_diagonal
from lifelong.importance.kronecker import kronecker_factors, layer_matrix
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import MLP, ContinualClassifier
from lifelong.reporting import environment, write_json
from lifelong.strategies import build_strategy
from lifelong.strategies.base import state_nbytes
from lifelong.strategies.kronecker import KroneckerPenalty

ROOT = Path(__file__).resolve().parent.parent
STEP_STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
                   "naive": ("naive", {}), "ewc": ("ewc", {}), "kfac-ewc": ("kfac-ewc", {}),
                   "kfac-ewc energy 0.99": ("kfac-ewc", {"energy": 0.99}),
                   "kfac-ewc energy 0.95": ("kfac-ewc", {"energy": 0.95}),
                   "kfac-ewc energy 0.9": ("kfac-ewc", {"energy": 0.9}),
                   "online-kfac-ewc": ("online-kfac-ewc", {}),
                   # the rank cap: at most k exact eigen-directions per factor in the step, the rest one level
                   "online-kfac-ewc rank 64": ("online-kfac-ewc", {"rank": 64}),
                   "online-kfac-ewc rank 32": ("online-kfac-ewc", {"rank": 32}),
                   "online-kfac-ewc rank 16": ("online-kfac-ewc", {"rank": 16}),
                   "online-kfac-ewc rank 8": ("online-kfac-ewc", {"rank": 8}),
                   "gpm": ("gpm", {}), "gpm update": ("gpm", {"project": "update"})}


def _timed(fn, repeat: int = 3) -> float:
    """Best CPU seconds of this process over `repeat` calls (one torch thread: CPU time is the work done,
    whatever else the machine runs)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def merge_accuracy() -> list[dict[str, Any]]:
    """Merged against exact per-task Kronecker penalties on a small stream (section a)."""
    stream = build_stream(StreamConfig("permuted-digits", tasks=10))
    torch.manual_seed(0)
    model = ContinualClassifier(MLP(64, (64,), 10), len(stream), 10)
    learner = Learner(model, build_strategy("naive"), LearnerConfig(epochs=3, batch_size=32))
    per_task = []
    for task in stream:
        learner.fit(stream, task.id)
        factors, _ = kronecker_factors(model, BatchLoader([TaskData(task.train, task.id)], 256), fisher="true",
                                       generator=torch.Generator().manual_seed(task.id))
        modules = dict(model.named_modules())
        anchors = {n: layer_matrix(modules[n].weight, modules[n].bias).detach().clone() for n in factors}
        per_task.append((factors, anchors))
    with torch.no_grad():  # a point away from every anchor, as while learning a next task
        probe = {n: anchors[n] + 0.05 * torch.randn_like(anchors[n]) for n in anchors}
    rows = []
    for merge in ("nearest", "sum"):
        penalty = KroneckerPenalty(1.0, merge)
        for t, (factors, anchors) in enumerate(per_task, start=1):
            _load(model, anchors)
            penalty.add(factors, {}, model)
            if t not in (2, 5, 10):
                continue
            _load(model, probe)
            row: dict[str, Any] = {"merge": merge, "tasks": t, "layers": {}}
            for name in factors:
                kron = [torch.kron(f[name].A, f[name].G) for f, _ in per_task[:t]]
                exact = torch.stack(kron).sum(0)
                layer = penalty.layers[name]
                merged = torch.kron(layer["A"] * layer["scale"], layer["G"])
                d = [(probe[name] - a[name]).T.flatten() for _, a in per_task[:t]]
                grad_exact = torch.stack([k @ v for k, v in zip(kron, d, strict=True)]).sum(0)
                value_exact = torch.stack([v @ k @ v for k, v in zip(kron, d, strict=True)]).sum(0)
                dm = probe[name] - layer["anchor"]
                curved = layer["scale"] * layer["G"] @ dm @ layer["A"]
                grad_merged = (curved + layer["force"]).T.flatten()
                value_merged = (dm * curved).sum() + 2 * (layer["force"] * dm).sum() + layer["residual"]
                row["layers"][name] = {
                    "precision_relative_error": float((merged - exact).norm() / exact.norm()),
                    "gradient_relative_error": float((grad_merged - grad_exact).norm() / grad_exact.norm()),
                    "value_relative_error": float(abs(value_merged - value_exact) / value_exact)}
            rows.append(row)
            print(f"merge {merge}, {t} tasks: " + ", ".join(
                f"{n}: precision {v['precision_relative_error']:.3f} gradient {v['gradient_relative_error']:.3f} "
                f"value {v['value_relative_error']:.3f}" for n, v in row["layers"].items()), flush=True)
    return rows


@torch.no_grad()
def _load(model: nn.Module, matrices: dict[str, torch.Tensor]) -> None:
    modules = dict(model.named_modules())
    for name, m in matrices.items():
        cols = modules[name].weight[0].numel()
        modules[name].weight.copy_(m[:, :cols].reshape(modules[name].weight.shape))
        modules[name].bias.copy_(m[:, cols])


def _vision(n: int):
    stream = build_stream(StreamConfig("permuted-fmnist", tasks=2))
    x, y = stream[1].train.get_batch(torch.arange(n))
    torch.manual_seed(0)
    return ContinualClassifier(MLP(784, (400, 400), 10), 1, 10), x, y


def importance_times(n: int = 10_000, rounds: int = 5) -> dict[str, float]:
    """Seconds per 1,000 samples of each importance (section b): CPU time, the median of `rounds`
    interleaved rounds, so that a neighbour's burst touches every kind alike rather than one."""
    model, x, y = _vision(n)
    batches = [(x[i: i + 1024], y[i: i + 1024]) for i in range(0, n, 1024)]
    jobs: dict[str, Callable[[], Any]] = {
        f"diagonal {k}": partial(fisher_diagonal, model, batches, fisher=k)
        for k in ("empirical", "true", "exact", "batched")}
    jobs.update({f"kronecker {k}": partial(kronecker_factors, model, batches, fisher=k)
                 for k in ("true", "empirical", "exact")})
    jobs["gpm bases (300 samples)"] = partial(build_strategy("gpm").after_task, model, 0, batches)
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, job in jobs.items():
            times[name].append(_timed(job, 1) / (300 if name.startswith("gpm") else n) * 1000)
    out = {name: statistics.median(v) for name, v in times.items()}
    for name, seconds in out.items():
        print(f"{name}: {seconds:.3f} s per 1,000 samples", flush=True)
    return out


TEXT_STRATEGIES = ("naive", "ewc", "kfac-ewc", "online-kfac-ewc", "online-kfac-ewc rank 64",
                   "online-kfac-ewc rank 32", "gpm")


def _text(n: int):
    """A factory of the fine-tuned MiniLM classifier of the language table (CLINC150, 5 domains), and n
    training queries."""
    from lifelong.models.factory import ModelConfig, model_for

    stream = build_stream(StreamConfig("clinc150", "task", 5, encoder="finetune", per_intent=30))
    x, y = stream[0].train.get_batch(torch.arange(n))
    return (lambda: model_for(stream, ModelConfig())[0]), x, y


class Case:
    """One network for section c: a model factory, its training inputs, the batch size, the samples each
    earlier task's importance reads, and how an earlier task's inputs differ from the first task's."""

    def __init__(self, name: str, steps: int):
        self.name = name
        if name == "mlp":
            self.batch, self.samples = 128, 256
            _, self.x, self.y = _vision(max(self.batch * steps, 4 * self.batch, self.samples))
            self.make = lambda: ContinualClassifier(MLP(784, (400, 400), 10), 1, 10)
        else:
            self.batch, self.samples = 32, 64  # the fine-tuned table's batch; 64 queries keep 50 tasks affordable
            self.make, self.x, self.y = _text(max(self.batch * steps, 4 * self.batch, self.samples))

    def other_inputs(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """An earlier task's inputs: other pixel orders (mlp), or other queries (text)."""
        if self.name == "mlp":
            perm = torch.randperm(784, generator=gen)
            x = self.x[: self.samples]
            return x.flatten(1)[:, perm].reshape(x.shape), self.y[: self.samples]
        pick = torch.randperm(len(self.y), generator=gen)[: self.samples]
        return self.x[pick], self.y[pick]


def _learner(case: Case, name: str, options: dict, tasks: int) -> Learner:
    torch.manual_seed(0)
    model = case.make()
    budget = {"samples": case.samples} if name != "naive" and "gpm" not in name else {}
    learner = Learner(model, build_strategy(name, {**options, **budget}), LearnerConfig(batch_size=case.batch))
    learner.optimizer = learner._new_optimizer()
    gen = torch.Generator().manual_seed(0)
    zeros = torch.zeros(case.batch, dtype=torch.long)
    for _ in range(tasks):  # each earlier "task": a few steps, then the strategy's after_task
        learner.strategy.before_task(model, 0)
        for i in range(0, 4 * case.batch, case.batch):
            learner.train_step(Batch(case.x[i: i + case.batch], case.y[i: i + case.batch], zeros))
        learner.strategy.after_task(model, 0, [case.other_inputs(gen)])
    learner.strategy.before_task(model, 0)
    return learner


def step_ratios(case: Case, tasks: list[int], rounds: int, steps: int, strategies: dict[str, tuple[str, dict]],
                interleave: str = "step") -> dict[str, Any]:
    """Median step seconds of each strategy after each number of earlier tasks, over naive's (section c),
    and each strategy's state bytes per layer (section d).

    `interleave="step"` (default) times one step of each learner in turn, the order rotating, and takes the
    median of the `rounds * steps` single steps: a slow second of the machine then falls on every learner
    alike. `"round"` times `steps` steps of one learner at a time (the measurement before that, kept to
    compare): a burst of a neighbour can land on one learner's whole round."""
    b = case.batch
    zeros = torch.zeros(b, dtype=torch.long)
    batches = [Batch(case.x[i: i + b], case.y[i: i + b], zeros) for i in range(0, b * steps, b)]
    out: dict[str, Any] = {"steps": {}, "state": {}}
    for t in tasks:
        learners = {k: _learner(case, n, o, t) for k, (n, o) in strategies.items()}
        names = list(learners)
        times: dict[str, list[float]] = {k: [] for k in learners}
        for r in range(rounds):
            if interleave == "round":
                for k in (names if r % 2 == 0 else names[::-1]):
                    t0 = time.process_time()
                    for batch in batches:
                        learners[k].train_step(batch)
                    times[k].append((time.process_time() - t0) / len(batches))
                continue
            for i, batch in enumerate(batches):
                shift = (r * len(batches) + i) % len(names)
                for k in names[shift:] + names[:shift]:
                    t0 = time.process_time()
                    learners[k].train_step(batch)
                    times[k].append(time.process_time() - t0)
        naive = statistics.median(times["naive"])
        out["steps"][str(t)] = {k: {"seconds": statistics.median(v), "ratio_to_naive": statistics.median(v) / naive,
                                    "interleave": interleave} for k, v in times.items()}
        out["state"][str(t)] = {k: {"bytes": state_nbytes(lr.strategy.state_dict()),
                                    "per_layer": getattr(lr.strategy, "protection", lambda: [])()}
                                for k, lr in learners.items()}
        print(f"{case.name}, {t} earlier tasks: " + ", ".join(f"{k} {v['ratio_to_naive']:.2f}x"
                                                            for k, v in out["steps"][str(t)].items()), flush=True)
        del learners
    return out


def _merge(saved: dict[str, Any], measured: dict[str, Any], partial: bool) -> None:
    """A measurement of some strategies joins the saved one (each ratio is to its own run's naive step);
    a full one replaces it."""
    for section in ("steps", "state"):
        if not partial or section not in saved:
            saved[section] = measured[section]
            continue
        for tasks, rows in measured[section].items():
            saved[section].setdefault(tasks, {}).update(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="abc")
    p.add_argument("--tasks", default="1,10,50")
    p.add_argument("--text-tasks", default="1,10")
    p.add_argument("--text-steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--interleave", choices=("step", "round"), default="step",
                   help="sections c-e: time one step of each learner in turn (default), or whole rounds")
    p.add_argument("--strategies", default=None,
                   help="sections c-e: only these (naive always), merged into the saved results; default all")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "consolidation-cost.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    if "a" in args.sections:
        saved["merge"] = merge_accuracy()
        write_json(args.out, {**saved, "environment": environment()})
    if "b" in args.sections:
        saved["importance_seconds_per_1000"] = importance_times(rounds=args.rounds)
        write_json(args.out, {**saved, "environment": environment()})
    chosen = ["naive", *args.strategies.split(",")] if args.strategies else list(STEP_STRATEGIES)
    unknown = [k for k in chosen if k not in STEP_STRATEGIES]
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; choose from {', '.join(STEP_STRATEGIES)}")
    if "c" in args.sections or "d" in args.sections:
        measured = step_ratios(Case("mlp", args.steps), [int(t) for t in args.tasks.split(",")], args.rounds,
                               args.steps, {k: STEP_STRATEGIES[k] for k in chosen}, args.interleave)
        _merge(saved, measured, args.strategies is not None)
        write_json(args.out, {**saved, "environment": environment()})
    if "e" in args.sections:
        text = {k: STEP_STRATEGIES[k] for k in TEXT_STRATEGIES if k in chosen}
        measured = step_ratios(Case("text", args.text_steps), [int(t) for t in args.text_tasks.split(",")],
                               args.rounds, args.text_steps, text, args.interleave)
        saved["text"] = saved.get("text", {})
        _merge(saved["text"], measured, args.strategies is not None)
        write_json(args.out, {**saved, "environment": environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
