"""The poisoning benchmark's summaries: means over seeds, the targets each line is checked against,
and the Markdown tables (benchmarks/poisoning.py writes them into results/poisoning.json)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

SUCCESS = {"random": None, "targeted": "flip_success", "flood": "flip_success", "targeted-sybil": "flip_success",
           "backdoor": "backdoor_success", "backdoor-camouflage": "backdoor_success", "forgetting": None,
           "clean": None, "adaptive-split": "flip_success", "adaptive-boundary": "flip_success",
           "adaptive-collision": "collision_success"}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds per world x attack x rate x defence."""
    keys: dict[tuple[str, str, float, str], list[dict[str, Any]]] = {}
    for r in rows:
        keys.setdefault((r["world"], r["attack"], r["rate"], r["defence"]), []).append(r)
    out = []
    for (world, attack, rate, defence), group in keys.items():
        def mean(field: str, rows: list[dict[str, Any]] = group) -> float | None:
            values = [r[field] for r in rows if r.get(field) is not None]
            return float(np.mean(values)) if values else None

        def std(field: str | None, rows: list[dict[str, Any]] = group) -> float | None:
            values = [r[field] for r in rows if field and r.get(field) is not None]
            return float(np.std(values)) if len(values) > 1 else None

        def before_influence(field: str, rows: list[dict[str, Any]] = group) -> float | None:
            values = [r["screens_only"][field] for r in rows if r.get("screens_only") and
                      r["screens_only"][field] is not None]
            return float(np.mean(values)) if values else None
        metric = SUCCESS[attack]
        out.append({"world": world, "attack": attack, "rate": rate, "defence": defence, "seeds": len(group),
                    "retention": mean("retention"), "new_accuracy": mean("new_accuracy"),
                    "success": mean(metric) if metric else None, "success_metric": metric,
                    "flip_success": mean("flip_success"), "backdoor_success": mean("backdoor_success"),
                    "precision": mean("precision"), "recall": mean("recall"), "clean_held": mean("clean_held"),
                    "gate_1pt": mean("gate_1pt"), "gate_3pt": mean("gate_3pt"),
                    "success_std": std(metric), "new_accuracy_std": std("new_accuracy"),
                    "collision_success": mean("collision_success"),
                    "recall_before_influence": before_influence("recall"),
                    "clean_held_before_influence": before_influence("clean_held")})
    return out


def targets(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets at poison rates up to 30 %, for the screens and for each peer."""
    index = {(s["world"], s["attack"], s["rate"], s["defence"]): s for s in summary}
    out = []
    for s in summary:
        if s["defence"] in ("none", "oracle") or s["attack"] == "clean" or s["rate"] > 0.3:
            continue
        clean = index[(s["world"], "clean", 0.0, "none")]
        line: dict[str, Any] = {"world": s["world"], "attack": s["attack"], "rate": s["rate"], "defence": s["defence"]}
        line["retention_vs_clean"] = s["retention"] / clean["retention"]
        line["retention_ok"] = line["retention_vs_clean"] >= 0.95
        if s["success_metric"] == "backdoor_success":
            line["success_ok"] = s["success"] <= 0.05
        elif s["success_metric"] == "flip_success":
            line["success_vs_clean"] = s["success"] - clean["flip_success"]
            line["success_ok"] = line["success_vs_clean"] <= 0.02
        line["recall_ok"] = s["recall"] is not None and s["recall"] >= 0.90
        line["clean_held_ok"] = s["clean_held"] <= 0.05
        if s["defence"] == "screens":
            # at least as good as each peer on each line (0.5-point slack for ties in rounding)
            for peer in ("art-spectral", "art-activation"):
                if (s["world"], s["attack"], s["rate"], peer) not in index:
                    continue  # run with --peers new: no peer on this line
                p = index[(s["world"], s["attack"], s["rate"], peer)]
                worse = []
                if s["retention"] < p["retention"] - 0.005:
                    worse.append("retention")
                if s["success"] is not None and s["success"] > p["success"] + 0.005:
                    worse.append("success")
                if (s["recall"] or 0) < (p["recall"] or 0) - 0.005:
                    worse.append("recall")
                if s["clean_held"] > p["clean_held"] + 0.005:
                    worse.append("clean_held")
                line[f"worse_than_{peer}"] = worse
        out.append(line)
    return out


def target_line(row: dict[str, Any]) -> str:
    """One target check as a printed line: its keys and values, floats to 3 places."""
    return "  " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def sybil_targets(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 22's targets for the screens at targeted-sybil 30 %: attack success <= 5 %, clean feedback
    held <= 5 %, the new task's accuracy within 2 points of the clean run (no poison, no defence)."""
    index = {(s["world"], s["attack"], s["rate"], s["defence"]): s for s in summary}
    out = []
    for (world, attack, rate, defence), s in index.items():
        if attack != "targeted-sybil" or abs(rate - 0.3) > 1e-9 or defence != "screens":
            continue
        clean = index[(world, "clean", 0.0, "none")]
        line = {"world": world, "attack": attack, "rate": rate, "success": s["success"],
                "success_ok": s["success"] <= 0.05, "clean_held": s["clean_held"],
                "clean_held_ok": s["clean_held"] <= 0.05,
                "new_accuracy": s["new_accuracy"], "clean_run_new_accuracy": clean["new_accuracy"],
                "new_accuracy_ok": s["new_accuracy"] >= clean["new_accuracy"] - 0.02}
        oracle = index.get((world, attack, rate, "oracle"))
        if oracle is not None:  # trained on exactly the clean part: the best any defence can do
            line["oracle_new_accuracy"] = oracle["new_accuracy"]
            line["oracle_success"] = oracle["success"]
        out.append(line)
    return out


def _fmt(v: float | None, pct: bool = True) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def print_tables(summary: list[dict[str, Any]]) -> str:
    lines = []
    for world in dict.fromkeys(s["world"] for s in summary):
        lines.append(f"\n### {world}\n")
        lines.append("| attack | poison | defence | retention | new acc | attack success | precision | recall "
                     "| clean held | gate 1pt / 3pt |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for s in summary:
            if s["world"] != world:
                continue
            success = _fmt(s["success"]) + {"flip_success": " (flip)", "backdoor_success": " (trigger)",
                                            "collision_success": " (targets)"}.get(s["success_metric"] or "", "")
            gate = f"{_fmt(s['gate_1pt'])} / {_fmt(s['gate_3pt'])}"
            lines.append(f"| {s['attack']} | {100 * s['rate']:g} % | {s['defence']} | {_fmt(s['retention'], False)} "
                         f"| {_fmt(s['new_accuracy'])} | {success if s['success_metric'] else '-'} "
                         f"| {_fmt(s['precision'])} | {_fmt(s['recall'])} | {_fmt(s['clean_held'])} | {gate} |")
    text = "\n".join(lines)
    print(text)
    return text


def focus_table(summary: list[dict[str, Any]], attacks: list[str]) -> str:
    """A Markdown table of the given attacks' rows (every defence), mean ± std over seeds; for the
    screens, recall and clean held before the influence check in brackets."""

    def pm(v: float | None, sd: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}" + (f" ± {100 * sd:.1f}" if sd is not None else "")

    lines = ["| data | attack | defence | attack success | recall | clean held | new task acc | retention |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        if s["attack"] not in attacks:
            continue
        recall, clean = _fmt(s["recall"]), _fmt(s["clean_held"])
        if s["defence"] == "screens" and s["recall_before_influence"] is not None:
            recall += f" ({_fmt(s['recall_before_influence'])})"
        if s["defence"] == "screens" and s["clean_held_before_influence"] is not None:
            clean += f" ({_fmt(s['clean_held_before_influence'])})"
        lines.append(f"| {s['world']} | {s['attack']} {100 * s['rate']:g} % | {s['defence']} "
                     f"| {pm(s['success'], s['success_std'])} | {recall} | {clean} "
                     f"| {pm(s['new_accuracy'], s['new_accuracy_std'])} | {_fmt(s['retention'], False)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Markdown tables of a poisoning results file")
    parser.add_argument("results", type=Path)
    parser.add_argument("--attacks", default="clean,targeted-sybil,adaptive-split,adaptive-boundary,adaptive-collision")
    args = parser.parse_args(argv)
    data = json.loads(args.results.read_text())
    summary = summarise(data["rows"])
    print(focus_table(summary, args.attacks.split(",")))
    for line in sybil_targets(summary):
        print(target_line(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
