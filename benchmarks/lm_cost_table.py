"""benchmarks/lm_cost.py's report: the tables of results/lm-cost.json and the projection to 1B, 70B and
400B from the largest measured model (`python benchmarks/lm_cost.py table`). Measuring is lm_cost.py's."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent

def projection(rows: list[dict[str, Any]]) -> str:
    """1B, 70B, 400B from the largest measured model's per-parameter and per-token costs (at its largest
    measured step, where a GPU is nearest its throughput)."""
    big = max(rows, key=lambda r: (r["parameters"], r["tokens_per_step"]))
    per_param = min(big["penalty_seconds"]) / big["parameters"]
    train_per_param_token = min(big["naive_step_seconds"]) / (big["parameters"] * big["tokens_per_step"])
    # Under FSDP a rank runs the penalty on its 1/N of the parameters and forward/backward on its 1/N of the
    # tokens with all parameters, so the ratio depends on the global tokens per step only, not on P or N.
    ratio = {t: 1 + per_param / (train_per_param_token * t) for t in (big["tokens_per_step"], 65_536, 1_048_576)}
    where = "one CPU core" if big.get("device", "cpu") == "cpu" else big.get("device_name", big["device"])
    lines = [f"From {big['size']} ({big['parameters']:,} parameters), measured on {where}: penalty "
             f"{per_param * 1e9:.2f} s per 1e9 parameters, training {train_per_param_token * 1e12:.2f} s per 1e12 "
             "parameter-tokens. Step ratio EWC/naive at " + ", ".join(f"{t:,} tokens per step: {r:.4f}"
                                                                     for t, r in ratio.items()) + ".", "",
             "| model | EWC state (8 B/param) | state per rank, 64-way FSDP | state per rank, 512-way | "
             "Fisher on 1 % of a domain's tokens |", "|---|---|---|---|---|"]
    for name, p in (("1B", 1e9), ("70B", 70e9), ("400B", 400e9)):
        state = big["state_bytes_per_parameter"] * p
        lines.append(f"| {name} | {state / 1e9:,.0f} GB | {state / 64 / 1e9:,.1f} GB | {state / 512 / 1e9:,.2f} GB | "
                     f"{0.01 * big['importance_to_training_per_token']:.1%} of the domain's training time |")
    return "\n".join(lines)


def methods_table(r: dict[str, Any]) -> str:
    first = next(iter(r["step_seconds"]))
    lines = [f"Training steps side by side, {r['size']} ({r['parameters']:,} parameters, `{r['setting']}`, "
             f"--set {json.dumps(r['set'], sort_keys=True)}, {r['steps']} steps each, in turn; ratios to {first}):", "",
             "| method | options | fastest step s | median step s | ratio (fastest) | ratio (median) |",
             "|---|---|---|---|---|---|"]
    for m, s in r["step_seconds"].items():
        opts = json.dumps(r["methods"][m]["options"], sort_keys=True)
        lines.append(f"| {m} | {opts} | {min(s):.3f} | {float(torch.tensor(s).median()):.3f} | "
                     f"{r['ratio_fastest'][m]:.3f} | {r['ratio_median'][m]:.3f} |")
    return "\n".join(lines)


def print_tables(path: Path) -> int:
    """Every section of the cost file as tables, then a projection per device; 1 when there is no file yet."""
    if not path.exists():
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        print(f"no measurements yet ({shown}): run `benchmarks/lm_cost.py measure` first", file=sys.stderr)
        return 1
    saved = json.loads(path.read_text())
    print("| model | parameters | tokens/step | step ratio EWC/naive (min, median) | penalty share of a step | "
          "train s/1k tokens | importance s/1k tokens | importance/training per token | state B/param | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in saved.get("single", []):
        on = "" if r.get("device", "cpu") == "cpu" else f" ({r.get('device_name', r['device'])})"
        memory = (f"{r['peak_device_gb']:.1f} GB on the device" if "peak_device_gb" in r
                  else f"{r['peak_rss_gb']:.1f} GB")
        print(f"| {r['size']}{on} | {r['parameters']:,} | {r['tokens_per_step']} | {r['step_ratio_min']:.3f}, "
              f"{r['step_ratio_median']:.3f} | {r['penalty_share_of_step']:.2%} | "
              f"{r['train_seconds_per_1k_tokens']:.2f} | "
              f"{r['importance_seconds_per_1k_tokens']:.2f} | {r['importance_to_training_per_token']:.2f} | "
              f"{r['state_bytes_per_parameter']:.2f} | {memory} |")
    for r in saved.get("fsdp", []):
        for rank in r["ranks"]:
            print(f"\nFSDP {r['size']} rank {rank['rank']}/{rank['ranks']}: {rank['local_parameters']:,} local "
                  f"parameters, state {rank['state_bytes_rank']:,} B ({rank['state_bytes_per_local_parameter']:.2f} "
                  f"B per local parameter), step ratio {rank['step_ratio_min']:.3f}")
    for r in saved.get("penalty", []):
        step = next((min(s["naive_step_seconds"]) for s in saved.get("single", []) if s["size"] == r["size"]), None)
        print(f"\nThe penalty's gradient alone, {r['size']} ({r['parameters']:,} parameters, "
              f"fastest of {r['reps']}):\n")
        print("| kernel | bytes moved a parameter | ns a parameter | GB/s | share of a naive step (1,024 tokens) |")
        print("|---|---|---|---|---|")
        for name, k in r["kernels"].items():
            if k["seconds"] is None:
                print(f"| {name} | {k['bytes_per_parameter']} | not measured | | |")
                continue
            share = f"{k['seconds'] / step:.2%}" if step else "n/a"
            print(f"| {name} | {k['bytes_per_parameter']} | {k['ns_per_parameter']:.2f} | {k['gb_per_second']:.1f} | "
                  f"{share} |")
    for r in saved.get("fold", []):
        print(f"\nWhole steps, {r['size']} ({r['parameters']:,} parameters, {r['tokens_per_step']:,} tokens a step, "
              f"fastest of {r['steps']}, four optimizers in turn):\n")
        print("| optimizer | fastest step s | median step s | update alone s | update ns a parameter |")
        print("|---|---|---|---|---|")
        for name, times in r["step_seconds"].items():
            u = r["update_seconds"][name]
            print(f"| {name} | {min(times):.3f} | {float(torch.tensor(times).median()):.3f} | {u:.3f} | "
                  f"{u / r['parameters'] * 1e9:.2f} |")
        print(f"\nStep ratio EWC/naive: {r['step_ratio_library']:.3f} with torch's Adam and the library's gradient, "
              f"{r['step_ratio_folded']:.3f} (median {r['step_ratio_folded_median']:.3f}) with the penalty folded "
              "into the compiled Adam.")
    for r in saved.get("methods", []):
        print("\n" + methods_table(r))
    for device in dict.fromkeys(r.get("device", "cpu") for r in saved.get("single", [])):
        print("\n" + projection([r for r in saved["single"] if r.get("device", "cpu") == device]))
    return 0
