"""The tables of docs/consolidation.md, recomputed from the result files (nothing typed in by hand).

    python benchmarks/consolidation_tables.py            # every table, Markdown on stdout
    python benchmarks/consolidation_tables.py diagonal   # one: any name in TABLES (diagonal, probe, peer, merge, ...)
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def _rows(runs: list[dict[str, Any]], key: str) -> list[str]:
    lines = []
    for name in dict.fromkeys(r[key] for r in runs):
        mine = [r for r in runs if r[key] == name]
        cells = [_cell([r[k] for r in mine]) for k in ("average_accuracy", "average_retention", "learning_accuracy")]
        seeds = ",".join(str(r["seed"]) for r in mine)
        lines.append(f"| {name} | {seeds} | {' | '.join(cells)} |")
    return lines


HEADER = ["| run | seeds | final acc | retention | learning acc |", "|---|---|---|---|---|"]


def variants(files: list[str], title: str) -> str:
    runs = [r for f in files for r in ((_load(f) or {}).get("runs", []))]
    if not runs:
        return f"({title}: no results yet)"
    return "\n".join([f"{title} (from {', '.join('results/' + f for f in files)})", "", *HEADER,
                      *_rows(runs, "variant")])


def peer() -> str:
    data = _load("peer-avalanche.json")
    if not data:
        return "(peer: no results yet; python benchmarks/peer_avalanche.py)"
    runs = data["runs"]
    lines = ["| run | seeds | final acc | retention | learning acc | training CPU s | total CPU s | total wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["run"] for r in runs):
        mine = [r for r in runs if r["run"] == name]
        cells = [_cell([r[k] for r in mine]) for k in ("average_accuracy", "average_retention", "learning_accuracy")]
        timed = [r for r in mine if "cpu_seconds" in r]  # runs before CPU time was recorded have wall time only
        cpu = [f"{statistics.fmean(r[k] for r in timed):.0f}" if timed else "-"
               for k in ("train_cpu_seconds", "cpu_seconds")]
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in mine)} | {' | '.join(cells)} | "
                     f"{' | '.join(cpu)} | {statistics.fmean(r['seconds'] for r in mine):.0f} |")
    by = {(r["run"], r["seed"]): r for r in runs if "cpu_seconds" in r}
    pairs = [(by[("lifelong-ewc", s)], by[("avalanche-ewc", s)]) for (n, s) in by
             if n == "lifelong-ewc" and ("avalanche-ewc", s) in by]
    if pairs:  # the issue's time target, from the same seeds' CPU seconds
        ratios = [f"{mine[k] / peer_[k]:.2f}" for k in ("train_cpu_seconds", "cpu_seconds") for mine, peer_ in pairs]
        lines += ["", f"lifelong-ewc / avalanche-ewc, seeds {','.join(str(m['seed']) for m, _ in pairs)}: "
                      f"training CPU {', '.join(ratios[:len(pairs)])}x, total CPU {', '.join(ratios[len(pairs):])}x"]
    return "\n".join(lines)


def merge() -> str:
    data = _load("consolidation-cost.json")
    if not data or "merge" not in data:
        return "(merge: no results yet; python benchmarks/consolidation_cost.py --sections a)"
    lines = ["| merge | tasks | layer | precision error | gradient error | value error |", "|---|---|---|---|---|---|"]
    for row in data["merge"]:
        for layer, v in row["layers"].items():
            lines.append(f"| {row['merge']} | {row['tasks']} | {layer} | {v['precision_relative_error']:.3f} | "
                         f"{v['gradient_relative_error']:.3f} | {v['value_relative_error']:.3f} |")
    return "\n".join(lines)


def importance(seconds: dict[str, float]) -> list[str]:
    """Seconds per 1,000 samples of each importance, and each Kronecker kind over the diagonal of its kind.
    (Files written before commit 475628d hold wall seconds, later ones CPU seconds: environment.command
    and the commit say which.)"""
    lines = ["| importance | s per 1,000 samples | over the diagonal of the same kind |", "|---|---|---|"]
    for k, v in seconds.items():
        base = seconds.get(k.replace("kronecker", "diagonal")) if k.startswith("kronecker") else None
        lines.append(f"| {k} | {v:.3f} | {f'{v / base:.2f}x' if base else '-'} |")
    return lines


def _step_rows(data: dict[str, Any], digits: int) -> list[str]:
    """Each strategy's step over naive's and its state in MB, after each number of earlier tasks."""
    tasks = list(data["steps"])
    lines = [f"| strategy | {' | '.join(f'step / naive, {t} earlier' for t in tasks)} | "
             f"{' | '.join(f'state MB, {t}' for t in tasks)} |", "|---" * (1 + 2 * len(tasks)) + "|"]
    for n in data["steps"][tasks[0]]:
        ratios = [f"{data['steps'][t][n]['ratio_to_naive']:.2f}" for t in tasks]
        state = [f"{data['state'][t][n]['bytes'] / 1e6:.{digits}f}" for t in tasks]
        lines.append(f"| {n} | {' | '.join(ratios)} | {' | '.join(state)} |")
    return lines


def cost() -> str:
    data = _load("consolidation-cost.json")
    if not data or ("steps" not in data and "importance_seconds_per_1000" not in data):
        return "(cost: no results yet; python benchmarks/consolidation_cost.py)"
    if "steps" not in data:
        return "\n".join(["(step and state: no results yet; python benchmarks/consolidation_cost.py --sections cd)",
                          "", *importance(data["importance_seconds_per_1000"])])
    tasks = list(data["steps"])
    lines = _step_rows(data, 2)
    if "importance_seconds_per_1000" in data:
        lines += ["", *importance(data["importance_seconds_per_1000"])]
    last = tasks[-1]
    for n in ("kfac-ewc", "kfac-ewc energy 0.95", "gpm"):
        per_layer = data["state"][last].get(n, {}).get("per_layer", [])
        if per_layer:
            lines += ["", f"{n} after {last} tasks, per layer:", "",
                      "| layer | form | protected | state bytes | diagonal's bytes |", "|---|---|---|---|---|"]
            for r in per_layer:
                kept = (f"rank {r['rank_A']}/{r['size_A']} x {r['rank_G']}/{r['size_G']}, curvature "
                        f"{r['curvature_kept']:.3f}" if "rank_A" in r else
                        f"basis {r['basis']}/{r['size']} of the input space" if "basis" in r else "-")
                lines.append(f"| {r['layer']} | {r['form']} | {kept} | {r['state_bytes']:,} | "
                             f"{r.get('diagonal_state_bytes', 0):,} |")
    return "\n".join(lines)


def cost_text() -> str:
    """Section e: the step and state on the fine-tuned MiniLM encoder."""
    data = (_load("consolidation-cost.json") or {}).get("text")
    if not data:
        return "(MiniLM step: no results yet; python benchmarks/consolidation_cost.py --sections e)"
    tasks = list(data["steps"])
    lines = _step_rows(data, 1)
    naive = data["steps"][tasks[0]]["naive"]["seconds"]
    lines += ["", f"(naive step: {naive:.2f} CPU s for a batch of 32 queries)"]
    return "\n".join(lines)


def vision(setting: str = "permuted") -> str:
    """The README benchmark's runs (results/vision-SETTING.json: naive, the diagonal methods, replay, joint)
    beside this issue's, run in the same regime by the same script into results/consolidation/*/, and
    (50 tasks) the single test runs of `lifelong run` with other options, one file per seed. One row per
    strategy and options."""
    files = [RESULTS / f"vision-{setting}.json", *sorted(RESULTS.glob(f"consolidation/*/vision-{setting}.json"))]
    runs = [r for f in files if f.exists() for r in json.loads(f.read_text())["runs"]]
    def label(r: dict[str, Any]) -> str:
        shown = {k: v for k, v in r["config"]["strategy_options"].items() if k not in ("seed", "memory")}
        return f"{r['strategy']} {shown}" if shown else r["strategy"]

    if setting == "permuted-50":  # a single run counts once: the script's file holds the same configuration's
        seen = {(label(r), r["config"]["seed"]) for r in runs}
        singles = [json.loads(f.read_text()) for f in sorted(RESULTS.glob("vision-permuted-50-*-seed*.json"))]
        runs += [r for r in singles if (label(r), r["config"]["seed"]) not in seen]
    if not runs:
        return f"(vision {setting}: no results yet)"
    return "\n".join(HEADER + _rows([{**r, "label": label(r), "seed": r["config"]["seed"]} for r in runs], "label"))


def lora() -> str:
    """Section 7: every method on the same LoRA rank (results/language-lora-task.json, and olora in O-LoRA's
    loss mode from results/language-lora-task-olora-loss.json), one row per strategy and options, with the
    bytes each keeps beside the model (strategy state) and the wall-clock seconds of a run (a loaded machine)."""
    files = [_load("language-lora-task.json"), _load("language-lora-task-olora-loss.json")]
    runs = [r for data in files if data is not None for r in data["runs"]]
    if not runs:
        return "(lora-task: no results yet)"

    def options(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r["config"]["strategy_options"].items() if k not in ("seed", "memory")}

    lines = ["| strategy | options | seeds | final acc | retention | learning acc | state bytes | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys((r["strategy"], json.dumps(options(r), sort_keys=True)) for r in runs):
        mine = [r for r in runs if (r["strategy"], json.dumps(options(r), sort_keys=True)) == key]
        cells = [_cell([r[k] for r in mine]) for k in ("average_accuracy", "average_retention", "learning_accuracy")]
        seconds = statistics.fmean(r["seconds"] for r in mine)
        lines.append(f"| {key[0]} | {options(mine[0]) or '-'} | {','.join(str(r['config']['seed']) for r in mine)} | "
                     f"{' | '.join(cells)} | {mine[0].get('state_bytes', 0):,} | {seconds:.0f} |")
    return "\n".join(lines)


def rank() -> str:
    """Section 5: the step's rank cap, in the README's 10-task regime (test runs of `lifelong run`, one
    file per seed) beside the full step's runs from the vision table."""
    runs = [json.loads(f.read_text()) for f in sorted(RESULTS.glob("vision-permuted-online-kfac-ewc-rank*-seed*.json"))]
    full = [r for r in (_load("vision-permuted.json") or {}).get("runs", []) if r["strategy"] == "online-kfac-ewc"]
    if not runs:
        return "(rank: no results yet)"
    lines = HEADER[:]
    for label, subset in (("online-kfac-ewc, full step", full),
                          *((f"online-kfac-ewc, rank {k}", [r for r in runs if r["config"]["strategy_options"]
                                                             .get("rank") == k])
                            for k in sorted({r["config"]["strategy_options"].get("rank") for r in runs}))):
        lines += _rows([{**r, "label": label, "seed": r["config"]["seed"]} for r in subset], "label")
    return "\n".join(lines)


TABLES = {"diagonal": lambda: variants(["ewc-diagonal-test.json"], "Test split"),
          "diagonal-valid": lambda: variants(["ewc-diagonal-valid.json"], "Validation split"),
          "probe": lambda: variants(["consolidation-probe-valid.json", "consolidation-probe-valid-energy.json"],
                                    "Validation split"),
          "probe-truncated": lambda: variants(["consolidation-probe-valid-truncated.json"],
                                              "Validation split, the step's earlier plain truncation"),
          "peer": peer, "merge": merge, "cost": cost, "cost-text": cost_text, "vision": vision,
          "vision-50": lambda: vision("permuted-50"), "lora": lora, "rank": rank,
          "probe-rank": lambda: variants(["consolidation-probe-valid-rank.json"], "Validation split, the rank cap")}


def main() -> int:
    names = sys.argv[1:] or list(TABLES)
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        print(f"unknown table(s) {unknown}; choose from {', '.join(TABLES)}", file=sys.stderr)
        return 2
    for n in names:
        print(f"<!-- {n} -->\n{TABLES[n]()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
