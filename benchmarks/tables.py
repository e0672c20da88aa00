"""Print the README's tables from the result files under results/ (nothing is typed in by hand).

    python benchmarks/tables.py                 # every table whose results exist
    python benchmarks/tables.py summary vision-permuted   # some of them
    python benchmarks/tables.py --readme        # rewrite the README's generated blocks in place
    python benchmarks/tables.py --readme summary language-finetune-class   # only these blocks

In README.md a generated block sits between `<!-- table NAME -->` and `<!-- end table -->`.

Each benchmark script writes results/<script>-<setting>.json with every run; the tables here are
recomputed from those runs (mean +- std over seeds), so they always match the files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from lifelong.reporting import CLASS_IL_KEYS, aggregate, format_compare

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
CONSOLIDATION = ("naive", "ewc", "online-ewc", "si", "mas", "online-kfac-ewc", "gpm", "replay", "ewc+replay", "joint")
SUMMARY = [  # (domain, result file, what it is)
    ("vision", "vision-permuted", "Permuted Fashion-MNIST, 10 tasks, domain-IL"),
    ("vision", "vision-split-task", "Split Fashion-MNIST, 5 tasks, task-IL"),
    ("vision", "vision-split-class", "Split Fashion-MNIST, 5 tasks, class-IL"),
    ("language", "language-frozen-task", "CLINC150, 10 domains, task-IL (frozen MiniLM)"),
    ("language", "language-frozen-class", "CLINC150, 10 domains, class-IL (frozen MiniLM)"),
    ("language", "language-finetune-task", "CLINC150, 5 domains, task-IL (fine-tuned MiniLM)"),
    ("language", "language-finetune-class", "CLINC150, 5 domains, class-IL (fine-tuned MiniLM)"),
    ("control", "control-lander-rewired", "LunarLander, 3 rewired sensor boards, behaviour cloning"),
    ("control", "control-classic", "CartPole -> Acrobot -> LunarLander, behaviour cloning"),
    ("control", "control-rl-cartpole-rewired", "CartPole, 3 rewired sensor boards, DQN"),
]


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def rows_of(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["strategy"]: row for row in aggregate(result["runs"])}


def header(result: dict[str, Any], name: str) -> str:
    env = result.get("environment", {})
    seeds = ",".join(str(s) for s in result.get("seeds", []))
    done = "" if result.get("complete", True) else " (INCOMPLETE: the run was stopped; rerun with --resume)"
    tuned = sorted({f for files in result.get("hyperparameters_from", {}).values() for f in files})
    return (f"`results/{name}.json`: {result['benchmark']}, {result['scenario']}-incremental, seeds {seeds}, "
            f"{env.get('cpu', '?')}, torch {env.get('torch', '?')}{done}. "
            f"Hyperparameters from {', '.join(f'`{t}`' for t in tuned) or 'the defaults'}.")


def table(name: str) -> str | None:
    result = load(name)
    if result is None:
        return None
    rows = aggregate(result["runs"])
    keys = CLASS_IL_KEYS if result["scenario"] == "class" else (
        "average_accuracy", "learning_accuracy", "average_retention", "forgetting", "seconds")
    return header(result, name) + "\n\n" + format_compare(rows, keys)


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    return f"{row['average_accuracy']['mean']:.3f} / {row['average_retention']['mean']:.3f}"


def _seed_counts(rows: dict[str, dict[str, Any]]) -> str:
    """'3 seeds', or '3 seeds; joint 1' where a column rests on fewer runs than the others."""
    counts = {name: len(row["seeds"]) for name, row in rows.items() if name in CONSOLIDATION}
    most = max(counts.values(), default=0)
    fewer = "; ".join(f"{name} {n}" for name, n in counts.items() if n < most)
    return f"{most} seed{'s' if most != 1 else ''}" + (f"; {fewer}" if fewer else "")


def summary() -> str:
    """Final accuracy / retention per setting and strategy, with naive's learning accuracy beside."""
    lines = ["| domain | setting | " + " | ".join(CONSOLIDATION) + " |", "|---|---|" + "---|" * len(CONSOLIDATION)]
    for domain, name, what in SUMMARY:
        result = load(name)
        if result is None:
            continue
        rows = rows_of(result)
        lines.append(f"| {domain} | {what} ({_seed_counts(rows)}) | "
                     + " | ".join(_cell(rows.get(s)) for s in CONSOLIDATION) + " |")
    return "\n".join(lines)


def poisoning(rate: float = 0.3) -> str | None:
    """Each attack at one poison rate: no defence, lifelong's screens, and the ART peers."""
    result = load("poisoning")
    if result is None:
        return None
    rows = {(r["world"], r["attack"], r["rate"], r["defence"]): r for r in result["summary"]}

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    lines = ["| data | attack | no defence: retention / success | screens: retention / success / recall / clean held "
             "| ART spectral: success / recall / clean held | ART activation: success / recall / clean held |",
             "|---|---|---|---|---|---|"]
    for world, attack, r, _ in sorted({k for k in rows if k[2] in (rate, 0.0) or (k[1] == "backdoor" and k[2] == 0.01)},
                                      key=lambda k: (k[0], k[2] != 0.0, k[1], k[2])):
        if (world, attack, r, "none") not in rows or _ != "none":
            continue
        none, scr = rows[(world, attack, r, "none")], rows[(world, attack, r, "screens")]
        # a run with --peers new has ART's rows only on issue 22's attacks: the others show a dash
        empty = {"success": None, "recall": None, "clean_held": None}
        spec = rows.get((world, attack, r, "art-spectral"), empty)
        act = rows.get((world, attack, r, "art-activation"), empty)
        lines.append(f"| {world} | {attack} {100 * r:g} % | {none['retention']:.3f} / {pct(none['success'])} | "
                     f"{scr['retention']:.3f} / {pct(scr['success'])} / {pct(scr['recall'])} / "
                     f"{pct(scr['clean_held'])} | "
                     f"{pct(spec['success'])} / {pct(spec['recall'])} / {pct(spec['clean_held'])} | "
                     f"{pct(act['success'])} / {pct(act['recall'])} / {pct(act['clean_held'])} |")
    seeds = f"{len(result.get('seeds', []))} seeds"
    existing = result.get("seeds_existing")
    if existing is not None and sorted(existing) != sorted(result.get("seeds", [])):
        seeds += f"; the attacks before issue 22 on seed{'s' if len(existing) > 1 else ''} " \
                 f"{', '.join(str(s) for s in existing)}, with a dash for ART"
    return (f"`results/poisoning.json` (`{result['command']}`, {seeds}, "
            f"{result['environment'].get('cpu', '?')}); retention is of the earlier tasks' accuracy, success "
            f"is the attack's (flip: class-A inputs answered B; backdoor: triggered inputs answered with the "
            f"target), recall and clean held are the screens' detection rate and the share of clean feedback "
            f"held, all in %.\n\n" + "\n".join(lines))


def serving() -> str | None:
    result = load("serve_load")
    if result is None:
        return None
    lines = ["| | requests/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|"]
    for key, name in (("idle", "no update running"), ("during_update", "while an update trains")):
        r = result[key]
        lines.append(f"| {name} | {r['throughput_rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |")
    return (f"p99 during an update / p99 without: {result['p99_ratio']:.2f} (target <= 2, 0 errors; "
            f"{result['environment'].get('cpu', '?')}).\n\n" + "\n".join(lines))


def serve_demo() -> str | None:
    r = load("serve_demo")
    if r is None:
        return None
    a = r["accuracy"]
    update = (f"| 2 (promoted, tolerance {r['tolerance']}) | {a['v2']['old']:.3f} | {a['v2']['new']:.3f} |\n"
              if "v2" in a else f"| update {r['update']['status']} by the gate (tolerance {r['tolerance']}) | "
              f"- | - |\n")
    why = "" if "v2" in a else f" The gate's reason: {r['update']['report']['reason']}."
    return (f"| version | old domains ({len(r['old_domains'])}) | new domains ({', '.join(r['new_domains'])}) |\n"
            f"|---|---|---|\n| 1 (before) | {a['v1']['old']:.3f} | {a['v1']['new']:.3f} |\n{update}"
            f"| after rollback (version {a['after_rollback']['version']}) | - | {a['after_rollback']['new']:.3f} |\n\n"
            f"{r['answered_during_update']} predictions were answered while the update trained; "
            f"the demo took {r['seconds']:.0f} s.{why}")


def scale() -> str | None:
    result = load("scale")
    if result is None:
        return None
    lines = ["| ranks | wall s | final acc | learning acc | retention |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['ranks']} | {r['wall_seconds']:.0f} | {r['average_accuracy']:.3f} | "
                     f"{r['learning_accuracy']:.3f} | {r['average_retention']:.3f} |")
    return f"`python benchmarks/scale.py` ({result['environment'].get('cpu', '?')}, CPU, gloo)\n\n" + "\n".join(lines)


def _run_name(spec: str) -> str:
    """`ewc:samples=all` -> `ewc, whole-task Fisher`; `ewc:samples=1024` -> `ewc, Fisher from 1024`."""
    return spec.replace(":samples=all", ", whole-task Fisher").replace(":samples=", ", Fisher from ")


def speed() -> str | None:
    r = load("speed")
    if r is None:
        return None
    out = [f"`make bench` (`results/speed.json`; {r['environment'].get('cpu', '?')}, torch threads "
           f"{r['torch_threads']}, data: {r['data']}).", "",
           "a. Importance (exact per-sample Fisher), samples/s:", "",
           "| model | parameters | per-sample loop | vmap | lifelong | x loop | mini-batch shortcut | its scale "
           "| max rel. diff vs loop |", "|---|---|---|---|---|---|---|---|---|"]
    for row in r.get("importance", []):
        vmap = f"{row['vmap_samples_per_s']:.0f}" if row["vmap_samples_per_s"] else "fails"
        out.append(f"| {row['model']} | {row['parameters'] / 1e6:.2f}M | {row['loop_samples_per_s']:.0f} | {vmap} | "
                   f"{row['lifelong_samples_per_s']:.0f} | {row['speedup_vs_loop']:.1f}x | "
                   f"{row['minibatch_samples_per_s']:.0f} | {row['minibatch_scale']:.4f} | "
                   f"{row['max_relative_difference_vs_loop']:.1e} |")
    out += ["", "b-d. Training step (MLP 784-400-400-10, batch 128) as a ratio to a naive step, and state:", "",
            "| strategy | step ratio | state bytes / parameter |", "|---|---|---|"]
    for k, v in r.get("step_ratio", {}).items():
        out.append(f"| {k} | {v:.3f} | {r['state_bytes_per_parameter'].get(k, 0):.1f} |")
    if "step_ratio_by_tasks" in r:
        by_tasks = ", ".join(f"{k}: {v:.3f}" for k, v in r["step_ratio_by_tasks"].items())
        state = ", ".join(f"{k}: {v:.1f}" for k, v in r["ewc_state_bytes_per_parameter_by_tasks"].items())
        out += ["", f"c. EWC step time with the state of N earlier tasks, ratio to 1: {by_tasks}.",
                f"d. EWC state bytes per parameter by N: {state}."]
    if "memory_by_tasks" in r:
        grow = {int(k): v for k, v in r["memory_by_tasks"].items()}
        rows = ", ".join(f"{k} tasks: {grow[k]['state'] / 2**20:.2f} MiB of state, resident memory "
                         f"{grow[k]['rss_growth'] / 2**20:+.1f} MiB" for k in (1, 10, 20) if k in grow)
        out[-1] += f" Measured in a fresh process, growth since the first task: {rows}."
    if "end_to_end_seconds" in r:
        names = [_run_name(k) for k in r["end_to_end_seconds"][next(iter(r["end_to_end_seconds"]))]]
        out += ["", "e. End-to-end training seconds of Permuted Fashion-MNIST (1 epoch, importance included):", "",
                "| tasks | " + " | ".join(names) + " |",
                "|---|" + "---|" * len(r["end_to_end_seconds"][next(iter(r["end_to_end_seconds"]))])]
        for tasks, secs in r["end_to_end_seconds"].items():
            out.append(f"| {tasks} | " + " | ".join(f"{v:.0f} s ({v / secs['naive']:.2f}x)" for v in secs.values())
                       + " |")
    if "by_size" in r:
        out += ["", "f. Cost by model size (MLP 784-h-h-10):", "",
                "| parameters | naive ms/step | EWC x | SI x | MAS x | EWC state MiB |", "|---|---|---|---|---|---|"]
    for row in r.get("by_size", []):
        out.append(f"| {row['parameters'] / 1e6:.1f}M | {row['naive_step_seconds'] * 1e3:.1f} | "
                   f"{row['ewc_step_ratio']:.3f} | {row['si_step_ratio']:.3f} | {row['mas_step_ratio']:.3f} | "
                   f"{row['ewc_state_bytes'] / 2**20:.0f} |")
    if "options" in r:
        out += ["", "g. Cheaper EWC state on 10-task Permuted Fashion-MNIST (seed 0, test split):", "",
                "| variant | final acc | learning acc | retention | state MiB | train s |", "|---|---|---|---|---|---|"]
        for row in r["options"]:
            out.append(f"| {row['variant']} | {row['average_accuracy']:.3f} | {row['learning_accuracy']:.3f} | "
                       f"{row['average_retention']:.3f} | {row['state_bytes'] / 2**20:.2f} | "
                       f"{row['train_seconds']:.0f} |")
    return "\n".join(out)


SPECIAL = {"summary": summary, "speed": speed, "scale": scale, "serving": serving, "serve-demo": serve_demo,
           "poisoning": poisoning}


def render(name: str) -> str | None:
    return SPECIAL[name]() if name in SPECIAL else table(name)


BLOCK = re.compile(r"(<!-- table (\S+) -->\n).*?(<!-- end table -->)", re.S)


def update_readme(path: Path, only: list[str] | None = None) -> list[str]:
    """Rewrite every generated block of the README (or those named in `only`) from the results; returns the
    names left as they were because their results are missing."""
    missing: list[str] = []

    def fill(m: re.Match[str]) -> str:
        if only and m.group(2) not in only:
            return m.group(0)
        text = render(m.group(2))
        if text is None:
            missing.append(m.group(2))
            return m.group(0)
        return f"{m.group(1)}{text}\n{m.group(3)}"

    path.write_text(BLOCK.sub(fill, path.read_text()))
    return missing


def main() -> int:
    names = sorted(p.stem for p in RESULTS.glob("*.json")
                   if p.stem.split("-")[0] in ("vision", "language", "control", "class"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", nargs="*", help=f"{', '.join(SPECIAL)} or a result name such as vision-permuted "
                   "(default: all)")
    p.add_argument("--readme", action="store_true", help="rewrite the generated blocks of README.md")
    args = p.parse_args()
    if args.readme:
        missing = update_readme(ROOT / "README.md", args.tables)
        print(f"README.md updated; no results yet for: {', '.join(missing) or 'none'}")
        return 0
    for name in args.tables or [*SPECIAL, *names]:
        text = render(name)
        if text is None:
            print(f"no results/{name}.json (run its benchmark first)", file=sys.stderr)
            return 1
        print(f"### {name}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
