"""Continual reinforcement learning benchmark: PPO learning control tasks in turn (docs/control.md).

Settings (chosen by benchmarks/control_rl_study.py: sequences where naive PPO forgets):
  cartpole-shared  CartPole through 3 differently wired sensor boards, one shared policy network
                   (one action head per task), PPO
  dynamics-shared  CartPole with 3 pole lengths and forces, each seen through another sensor board, one
                   shared policy network, PPO

Methods: naive, ewc and online-ewc on the policy (exact policy Fisher at visited states), online-kfac-ewc
(issue 18's Kronecker-factored online Laplace on the policy, the same exact policy Fisher), distill
(functional consolidation on stored states, ClonEx / P&C style; its bytes are counted), multitask
(every environment at once for the whole sequence's steps: the upper bound).

    python benchmarks/control_rl.py tune --settings cartpole-shared --threads 1   # validation seeds 100, 101
    python benchmarks/control_rl.py run --settings cartpole-shared --seeds 0,1,2,3,4 --threads 1
    python benchmarks/control_rl.py table --settings cartpole-shared             # tables + figure from the JSON

Tuning: each method's options on a small grid, on validation seeds (100, 101: other agent seeds
and other evaluation episodes than the reported runs'), keeping the value with the best final
normalised return among those whose learning score (the diagonal) stays within 0.05 of naive's.
Choices and every value tried go to results/tuning/control-rl-<setting>-<method>.json. Runs go to
results/control-rl-<setting>.json after each one; rerunning resumes (finished runs are skipped).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong.agents.continual import RLRunConfig, run_rl
from lifelong.data.control import observation_size
from lifelong.reporting import environment, write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS, TUNING = ROOT / "results", ROOT / "results" / "tuning"
METHODS = ("naive", "ewc", "online-ewc", "online-kfac-ewc", "distill", "multitask")
VALIDATION_SEEDS = (100,)  # one validation seed: the CPU budget (docs/control.md)
PPO = {"epochs": 10, "gamma": 0.98, "gae_lambda": 0.8}


@dataclass
class Setting:
    sequence: str
    steps: int
    policy_input: str = "shared"
    tasks: int = 3
    tuned_on: str = ""  # another setting whose tuning files this one uses (the CPU budget: docs/control.md)
    agent_options: dict[str, Any] = field(default_factory=lambda: dict(PPO))
    fixed: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "ewc": {"fisher": "exact"}, "online-ewc": {"fisher": "exact"}, "online-kfac-ewc": {"fisher": "exact"},
        "distill": {"per_task": 1000}})
    grid: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {
        "ewc": [{"strength": s} for s in (100.0, 300.0)],  # 1,000 on the same seed: the study (final 0.75)
        "online-ewc": [{"strength": s, "gamma": 0.9} for s in (100.0, 1_000.0)],
        # issue 18's Kronecker factors on the policy: per-sample scale like EWC's, one decade each side
        "online-kfac-ewc": [{"strength": s} for s in (10.0, 100.0, 1_000.0)],
        "distill": [{"alpha": 1.0}]})  # it reached the ceiling on validation (final 0.988): larger alpha not tried

    def config(self, method: str, options: dict[str, Any], seed: int, split: str) -> RLRunConfig:
        return RLRunConfig(self.sequence, self.tasks, method, {**self.fixed.get(method, {}), **options}, self.steps,
                           agent_options=self.agent_options, policy_input=self.policy_input, seed=seed,
                           eval_split=split, eval_episodes=10, curve_every=self.steps // 4, curve_episodes=3)


SETTINGS = {
    "cartpole-shared": Setting("cartpole-rewired", 60_000),
    "dynamics-shared": Setting("cartpole-dynamics-rewired", 60_000, tuned_on="cartpole-shared"),
}


def _key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=list)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"runs": []}


def _run_saved(path: Path, cfg: RLRunConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run of this configuration from `path`, or run it now and append it there."""
    key = _key(cfg.to_dict())
    for r in _load(path)["runs"]:
        if _key(r["config"]) == key:
            return r
    r = run_rl(cfg)
    r["config"] = json.loads(_key(r["config"]))
    r["environment"] = environment()
    data = _load(path)  # read again: another process may have added runs meanwhile
    data["runs"].append(r)
    data.update(extra or {})
    data["environment"] = environment()
    write_json(path, data)
    print(f"{cfg.sequence} {cfg.strategy} {cfg.strategy_options} seed {cfg.seed} ({cfg.eval_split}): final "
          f"{r['average_accuracy']:.3f} learning {_fmt(r['learning_accuracy'])} retention "
          f"{_fmt(r['average_retention'])} ({r['seconds']:.0f} s)", flush=True)
    return r


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def tune(name: str, setting: Setting, methods: list[str]) -> None:
    tuning_file = TUNING / f"control-rl-{name}-runs.json"

    def score(method: str, options: dict[str, Any]) -> dict[str, float]:
        runs = [_run_saved(tuning_file, setting.config(method, options, s, "valid")) for s in VALIDATION_SEEDS]
        learning = [r["learning_accuracy"] for r in runs if r["learning_accuracy"] is not None]
        return {"final": float(np.mean([r["average_accuracy"] for r in runs])),
                "learning": float(np.mean(learning)) if learning else float("nan"),
                "retention": float(np.mean([r["average_retention"] or 0.0 for r in runs]))}

    if "naive" in methods:
        score("naive", {})
    grids: dict[str, list[dict[str, Any]]] = {
        m: [{"options": o, **score(m, o)} for o in setting.grid[m]] for m in methods if m in setting.grid}
    saved = {_key(r["config"]) for r in _load(tuning_file)["runs"]}
    if any(_key(setting.config("naive", {}, s, "valid").to_dict()) not in saved for s in VALIDATION_SEEDS):
        print("naive's validation runs are missing: rerun `tune` with naive to write the choices")
        return
    naive = score("naive", {})
    for method, tried in grids.items():
        allowed = [t for t in tried if t["learning"] >= naive["learning"] - 0.05] or tried
        best = max(allowed, key=lambda t: t["final"])
        out = TUNING / f"control-rl-{name}-{method}.json"
        write_json(out, {"setting": name, "method": method, "rule": "best validation final normalised "
                         "return among options whose learning score is within 0.05 of naive's",
                         "validation_seeds": list(VALIDATION_SEEDS), "naive": naive,
                         "chosen": best["options"], "tried": tried})
        print(f"{name} {method}: chose {best['options']} (final {best['final']:.3f}, learning {best['learning']:.3f},"
              f" retention {best['retention']:.3f})", flush=True)


def chosen(name: str, method: str) -> dict[str, Any]:
    path = TUNING / f"control-rl-{name}-{method}.json"
    return json.loads(path.read_text())["chosen"] if path.exists() else {}


def run(name: str, setting: Setting, methods: list[str], seeds: list[int]) -> None:
    out = RESULTS / f"control-rl-{name}.json"
    tuned = setting.tuned_on or name
    sources = {m: f"results/tuning/control-rl-{tuned}-{m}.json" for m in methods if chosen(tuned, m)}
    for method in methods:
        for seed in seeds:
            _run_saved(out, setting.config(method, chosen(tuned, method), seed, "test"),
                       {"setting": name, "hyperparameters_from": sources})


def share(runs: list[dict[str, Any]], part: str, whole: str) -> float:
    """Mean over runs of timing[part] / timing[whole]."""
    return float(np.mean([r["timing"][part] / r["timing"][whole] for r in runs]))


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method: mean and std over seeds of the metrics and costs."""
    by: dict[str, list[dict[str, Any]]] = {}
    unique = {_key(r["config"]): r for r in runs}  # a run two processes both finished counts once
    for r in unique.values():
        by.setdefault(r["strategy"], []).append(r)
    naive_update = None
    if "naive" in by:
        naive_update = np.mean([r["timing"]["update_seconds"] / r["timing"]["updates"] for r in by["naive"]])
    rows = []
    for method in [m for m in METHODS if m in by] + [m for m in by if m not in METHODS]:
        rs = by[method]

        def stat(key: str, rs: list[dict[str, Any]] = rs) -> tuple[float, float] | None:
            values = [r[key] for r in rs if r[key] is not None]
            return (float(np.mean(values)), float(np.std(values))) if values else None

        update = np.mean([r["timing"]["update_seconds"] / r["timing"]["updates"] for r in rs])
        rows.append({
            "method": method, "seeds": sorted(r["config"]["seed"] for r in rs),
            "final": stat("average_accuracy"), "learning": stat("learning_accuracy"),
            "retention": stat("average_retention"),
            "options": rs[0]["config"]["strategy_options"],
            "update_ms": 1000 * float(update),
            "update_vs_naive": float(update / naive_update) if naive_update else None,
            "penalty_share_of_update": share(rs, "after_backward_seconds", "update_seconds"),
            "importance_share_of_training": share(rs, "importance_seconds", "train_seconds"),
            # runs made before Kronecker and GPM state was counted recorded 0: shown as "-" (the cost table has it)
            "consolidation_bytes": rs[0]["consolidation_bytes"] or (None if "kfac" in method else 0),
            "stored_bytes": rs[0]["stored_bytes"],
            "seconds": float(np.mean([r["seconds"] for r in rs]))})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def pm(v: tuple[float, float] | None) -> str:
        return "-" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}"

    lines = ["| method | final normalised return | learning (diagonal) | retention | update vs naive | "
             "importance / training | state bytes | stored states bytes | options |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        options = {k: v for k, v in row["options"].items() if k != "seed"}
        ratio = "-" if row["update_vs_naive"] is None else f"{row['update_vs_naive']:.2f}x"
        lines.append(f"| {row['method']} ({len(row['seeds'])} seeds) | {pm(row['final'])} | {pm(row['learning'])} | "
                     f"{pm(row['retention'])} | {ratio} | {100 * row['importance_share_of_training']:.2f} % | "
                     f"{'-' if row['consolidation_bytes'] is None else format(row['consolidation_bytes'], ',')} | "
                     f"{row['stored_bytes']:,} | {options or ''} |")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> str:
    """The issue's targets, checked on the means over seeds."""
    by = {r["method"]: r for r in rows}
    lines = []
    if "naive" in by and by["naive"]["retention"]:
        lines.append(f"- naive retention {by['naive']['retention'][0]:.3f} "
                     f"({'< 0.4: forgets' if by['naive']['retention'][0] < 0.4 else 'NOT < 0.4'})")
    for method in ("ewc", "online-ewc", "online-kfac-ewc", "distill"):
        if method not in by or by[method]["retention"] is None:
            continue
        r = by[method]
        met = r["retention"][0] >= 0.9 and r["final"][0] >= 0.85
        lines.append(f"- {method}: retention {r['retention'][0]:.3f} (>= 0.90?), final {r['final'][0]:.3f} "
                     f"(>= 0.85?): {'met' if met else 'not met'}; update {r['update_vs_naive'] or float('nan'):.2f}x "
                     f"naive's (penalty {100 * r['penalty_share_of_update']:.1f} % of an update), importance "
                     f"{100 * r['importance_share_of_training']:.2f} % of training")
    return "\n".join(lines)


def table(name: str) -> None:
    from lifelong.reporting.control_plots import return_curves, save

    path = RESULTS / f"control-rl-{name}.json"
    data = _load(path)
    if not data["runs"]:
        print(f"no runs in {path}")
        return
    rows = summary(data["runs"])
    text = markdown(rows) + "\n\n" + targets(rows)
    data["summary"], data["table"] = rows, text
    write_json(path, data)
    figure = save(return_curves(list({_key(r["config"]): r for r in data["runs"]}.values()), name, METHODS),
                  ROOT / "docs" / "figures" / f"control-rl-{name}.png")
    print(f"\n{name} ({path.relative_to(ROOT)}; figure {figure.relative_to(ROOT)})\n\n{text}\n", flush=True)


def cost(repeats: int = 7) -> None:
    """Per-update cost of each method against naive, measured in one process with the methods
    interleaved (cross-run timings on a shared machine measure its load, not the method): PPO
    updates on one synthetic rollout of the cartpole-shared policy, after a first task, so that the
    penalty and the stored states are in place. Writes results/control-rl-cost.json."""
    import time

    from lifelong.agents.continual import build_rl_stream
    from lifelong.agents.ppo import PPOAgent, PPOConfig
    from lifelong.data.task import ArrayDataset, BatchLoader, TaskData
    from lifelong.models.heads import ContinualClassifier
    from lifelong.models.mlp import MLP
    from lifelong.reporting.importance import consolidation_bytes
    from lifelong.strategies import build_strategy

    setting = SETTINGS["cartpole-shared"]
    stream = build_rl_stream(RLRunConfig(setting.sequence, setting.tasks, eval_episodes=1))
    obs_size, n = observation_size(stream), 1024
    g = torch.Generator().manual_seed(0)
    states = torch.randn(2000, obs_size, generator=g)
    batch = (torch.randn(n, obs_size, generator=g), torch.randint(2, 4, (n,), generator=g),
             torch.full((n,), -0.69), torch.randn(n, generator=g), torch.randn(n, generator=g),
             torch.ones(n, dtype=torch.long))
    agents = {}
    for method in ("naive", "ewc", "online-ewc", "online-kfac-ewc", "distill"):
        torch.manual_seed(0)
        model = ContinualClassifier(MLP(obs_size, (64, 64), stream.num_classes), len(stream), stream.num_classes)
        options = {**setting.fixed.get(method, {}), **chosen("cartpole-shared", method)}
        agent = PPOAgent(model, build_strategy(method, options), len(stream), obs_size, (64, 64),
                         PPOConfig(**setting.agent_options))
        agent._set_position(stream, 1)
        began = time.perf_counter()
        agent.strategy.after_task(model, 0, BatchLoader([TaskData(ArrayDataset(states, torch.zeros(2000,
                                  dtype=torch.long)), 0)], 512))
        importance = time.perf_counter() - began
        agent.optimizer = torch.optim.Adam([*model.parameters(), *agent.critic.parameters()], lr=1e-3)
        agents[method] = (agent, importance)
    times: dict[str, list[float]] = {m: [] for m in agents}
    for _ in range(repeats):
        for method, (agent, _) in agents.items():
            params = [p for p in agent.model.parameters() if p.requires_grad]
            before, began = agent.timing["updates"], time.perf_counter()
            agent._update(*batch, params)  # epochs x (1024 / minibatch) updates
            times[method].append((time.perf_counter() - began) / (agent.timing["updates"] - before))
    base = float(np.median(times["naive"]))
    rows = {m: {"update_ms": 1000 * float(np.median(t)), "vs_naive": float(np.median(t)) / base,
                "importance_seconds_2000_states": agents[m][1],
                "consolidation_bytes": consolidation_bytes(agents[m][0].strategy)} for m, t in times.items()}
    out = RESULTS / "control-rl-cost.json"
    write_json(out, {"setting": "cartpole-shared", "repeats": repeats, "rows": rows, "environment": environment()})
    for m, row in rows.items():
        print(f"{m}: {row['update_ms']:.2f} ms per update, {row['vs_naive']:.3f}x naive; importance "
              f"{row['importance_seconds_2000_states']:.3f} s on 2,000 states; "
              f"state {row['consolidation_bytes']:,} bytes")
    print(f"written to {out.relative_to(ROOT)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("tune", "run", "table", "cost", "all"))
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: bit-for-bit reproducible)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    unknown = set(methods) - set(METHODS)
    if unknown:
        p.error(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    if args.command == "cost":
        cost()
        return 0
    for name in args.settings.split(","):
        if name not in SETTINGS:
            p.error(f"unknown setting {name!r}; choose from {', '.join(SETTINGS)}")
        if args.command in ("tune", "all") and not SETTINGS[name].tuned_on:
            tune(name, SETTINGS[name], methods)
        if args.command in ("run", "all"):
            run(name, SETTINGS[name], methods, [int(s) for s in args.seeds.split(",")])
        if args.command in ("table", "all"):
            table(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
