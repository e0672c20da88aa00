"""Does a fixed importance budget keep what the whole-task importance keeps? (issue 17.5)

For each domain's benchmark preset (vision: 10-task Permuted Fashion-MNIST; language: CLINC150 task-IL on
the frozen encoder; control: LunarLander with 3 rewired sensor boards), EWC, online EWC and MAS run with
their importance from the whole task and from 1,024 samples, seeds 0 and 1, scored on a validation split
(the last 10 % of each task's training data; CLINC150's own validation queries; validation episodes), so
that the choice of the default never reads the test set. Each run is saved as it ends; `--resume` skips
the runs already in the file.

    python benchmarks/importance_budget.py                 # all three domains (about 2 core-hours)
    python benchmarks/importance_budget.py table           # the table from results/importance-budget.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong.presets import PRESETS
from lifelong.reporting import environment, write_json
from lifelong.run import RunConfig, run

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "importance-budget.json"
DOMAINS = {"vision": "permuted-fmnist", "language": "clinc150/task/frozen", "control": "control/task/lander-rewired"}
STRATEGIES = ("naive", "ewc", "mas", "online-ewc")
KEYS = ("average_accuracy", "learning_accuracy", "average_retention", "seconds", "train_seconds")


def measure(domain: str, strategy: str, samples: int | None, seed: int) -> dict[str, Any]:
    preset = PRESETS[DOMAINS[domain]]
    stream = preset.stream if preset.stream.benchmark == "clinc150" else replace(preset.stream, validation=0.1)
    options = preset.strategy_options(strategy)
    if strategy != "naive":
        options["samples"] = samples
    r = run(RunConfig(stream, strategy, options, preset.learner_for(strategy), preset.model, seed, "valid")).record
    return {**{k: r[k] for k in KEYS}, "after_task_seconds": sum(t["after_task_seconds"] for t in r["per_task"])}


def table(done: dict[str, Any]) -> str:
    """Per domain and strategy, mean over seeds: final / retention with the whole task and with 1,024."""
    lines = ["| domain | strategy | whole task: final / retention | 1,024 samples: final / retention | "
             "importance seconds (whole / 1,024) | seeds |", "|---|---|---|---|---|---|"]
    for domain in DOMAINS:
        for strategy in STRATEGIES[1:]:
            cells, seeds = [], 0
            for samples in ("None", "1024"):
                runs = [v for k, v in done.items() if k.startswith(f"{domain}/{strategy}/{samples}/")]
                seeds = len(runs) if not seeds else min(seeds, len(runs))
                cells.append(runs)
            if not all(cells):
                continue
            whole, budget = cells

            def mean(runs: list[dict[str, Any]], key: str) -> float:
                return float(np.mean([r[key] for r in runs]))

            lines.append(f"| {domain} | {strategy} | {mean(whole, 'average_accuracy'):.3f} / "
                         f"{mean(whole, 'average_retention'):.3f} | {mean(budget, 'average_accuracy'):.3f} / "
                         f"{mean(budget, 'average_retention'):.3f} | {mean(whole, 'after_task_seconds'):.1f} / "
                         f"{mean(budget, 'after_task_seconds'):.1f} | {seeds} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="run", choices=("run", "table"))
    p.add_argument("--domains", default=",".join(DOMAINS))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    saved = json.loads(out.read_text()) if out.exists() else {}
    done: dict[str, Any] = saved.get("runs", {})
    if args.command == "table":
        print(table(done))
        return 0
    torch.set_num_threads(1)
    if not args.resume:
        done = {}
    for domain in args.domains.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for strategy in STRATEGIES:
                for samples in ((None,) if strategy == "naive" else (None, 1024)):
                    key = f"{domain}/{strategy}/{samples}/{seed}"
                    if key not in done:
                        done[key] = measure(domain, strategy, samples, seed)
                        print(key, {k: round(v, 3) for k, v in done[key].items()}, flush=True)
                        write_json(out, {"command": " ".join(["python", *sys.argv]), "split": "valid",
                                         "environment": environment(), "runs": done})
    print(table(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
