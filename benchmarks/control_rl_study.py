"""Which continual RL task sequences make a naive PPO agent forget? (the study behind docs/control.md)

Each probe is one naive run (PPO, one seed) of a sequence under one policy layout; results go to
results/control-rl-study.json after every run (rerun with the same arguments to resume: probes
already there are skipped).

    python benchmarks/control_rl_study.py --threads 1
    python benchmarks/control_rl_study.py --probes cartpole-rewired:shared:60000 --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lifelong.agents.continual import RLRunConfig, run_rl
from lifelong.reporting import environment, write_json

ROOT = Path(__file__).resolve().parent.parent
# sequence:policy input:steps per task
PROBES = ("cartpole-rewired:per-task:50000", "acrobot-rewired:per-task:100000", "cartpole-rewired:shared:50000",
          "acrobot-rewired:shared:100000", "cartpole-dynamics:per-task:50000", "cartpole-dynamics:shared:50000",
          "cartpole-acrobot:per-task:75000")


def table(runs: list[dict]) -> str:
    """One row per probe: the normalised return matrix's summary and each task's fate."""
    lines = ["| sequence | policy input | method | PPO options | steps/task | seed | final | learning | retention |"
             " first task: learned -> end | tasks |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        c, m = r["config"], r["accuracy_matrix"]
        options = {k: v for k, v in c["strategy_options"].items() if k != "seed"}
        lines.append(f"| {c['sequence']} | {c['policy_input']} | {c['strategy']} {options or ''} | "
                     f"{c['agent_options'] or 'defaults'} | {c['steps']:,} | {c['seed']} | "
                     f"{r['average_accuracy']:.3f} | "
                     f"{r['learning_accuracy']:.3f} | {r['average_retention']:.3f} | {m[0][0]:.2f} -> {m[-1][0]:.2f} | "
                     f"{'; '.join(t['name'] for t in r['tasks'])} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--probes", default=",".join(PROBES), help="comma-separated sequence:input:steps")
    p.add_argument("--seeds", default="100", help="validation seeds: the study chooses, it reports nothing")
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--strategy", default="naive")
    p.add_argument("--options", default="{}", help="the strategy's options, JSON")
    p.add_argument("--agent-options", default="{}", help="PPOConfig fields, JSON")
    p.add_argument("--out", default=str(ROOT / "results" / "control-rl-study.json"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--table", action="store_true", help="print the study's table from the file and stop")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.table:
        print(table(json.loads(out.read_text())["runs"]))
        return 0
    saved = json.loads(out.read_text()) if out.exists() else {"runs": []}
    done = {json.dumps(r["config"], sort_keys=True) for r in saved["runs"]}
    for probe in args.probes.split(","):
        sequence, policy_input, steps = probe.split(":")
        for seed in (int(s) for s in args.seeds.split(",")):
            cfg = RLRunConfig(sequence, args.tasks, args.strategy, json.loads(args.options), steps=int(steps),
                              agent_options=json.loads(args.agent_options), policy_input=policy_input,
                              seed=seed, eval_split="valid", curve_every=0)
            if json.dumps(cfg.to_dict(), sort_keys=True) in done:
                continue
            r = run_rl(cfg)
            r["config"] = json.loads(json.dumps(r["config"]))  # tuples as lists, as they are read back
            print(f"{probe} seed {seed}: final {r['average_accuracy']:.3f} learning {r['learning_accuracy']:.3f} "
                  f"retention {r['average_retention']:.3f} ({r['seconds']:.0f} s)", flush=True)
            saved = json.loads(out.read_text()) if out.exists() else {"runs": []}  # another process may have added runs
            saved["runs"].append(r)
            saved["environment"] = environment()
            write_json(out, saved)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
