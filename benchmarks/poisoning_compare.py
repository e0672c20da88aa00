"""Did any row the screens won before get worse? Compares the screens' rows of two poisoning results
files on the seeds both ran, and prints a Markdown table. A seed draws the same feedback in both, but
the clean model is retrained by each run and need not be bit-for-bit the same across library
versions: the undefended rows ('none') change too, and the script prints by how much (the noise
floor of the comparison).

A row was *won* when the screens' attack success was below both ART defences' (or, for attacks
without a success measure, their recall above both peers'; for the clean row, their clean held
below). It *got worse* when, on the common seeds, attack success rose by more than 2 points, recall
fell by more than 2 points, clean feedback held rose by more than 1 point, the new task's accuracy
fell by more than 1 point, or retention fell by more than 0.01.

    git show 42a4abe:results/poisoning.json > /tmp/poisoning-before.json
    python benchmarks/poisoning_compare.py /tmp/poisoning-before.json results/poisoning.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from poisoning_tables import SUCCESS

LIMITS = {"success": 0.02, "recall": -0.02, "clean_held": 0.01, "new_accuracy": -0.01, "retention": -0.01}


def _means(rows: list[dict[str, Any]], seeds: set[int]) -> dict[tuple[Any, ...], dict[str, float | None]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r["seed"] in seeds:
            groups.setdefault((r["world"], r["attack"], r["rate"], r["defence"]), []).append(r)
    out = {}
    for key, group in groups.items():
        metric = SUCCESS.get(key[1])

        def mean(field: str | None, g: list[dict[str, Any]] = group) -> float | None:
            values = [r[field] for r in g if field and r.get(field) is not None]
            return float(np.mean(values)) if values else None

        out[key] = {"success": mean(metric), "recall": mean("recall"), "clean_held": mean("clean_held"),
                    "new_accuracy": mean("new_accuracy"), "retention": mean("retention")}
    return out


def _won(before: dict[tuple[Any, ...], dict[str, float | None]], world: str, attack: str, rate: float) -> bool:
    mine = before[(world, attack, rate, "screens")]
    peers = [before[(world, attack, rate, p)] for p in ("art-spectral", "art-activation")
             if (world, attack, rate, p) in before]
    if not peers:
        return False
    if attack == "clean":
        return all((mine["clean_held"] or 0) < (p["clean_held"] or 0) for p in peers)
    if mine["success"] is not None:
        return all(mine["success"] < (p["success"] or 0) - 0.005 for p in peers)
    return all((mine["recall"] or 0) > (p["recall"] or 0) + 0.005 for p in peers)


def compare(before_rows: list[dict[str, Any]], after_rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    seeds = {r["seed"] for r in before_rows} & {r["seed"] for r in after_rows}
    before, after = _means(before_rows, seeds), _means(after_rows, seeds)
    lines = [f"Screens' rows on the seeds both files ran ({', '.join(map(str, sorted(seeds)))}); before -> after, "
             "success / recall / clean held in %, new task accuracy in %, retention.", "",
             "| data | attack | won before | success | recall | clean held | new acc | retention | worse |",
             "|---|---|---|---|---|---|---|---|---|"]
    worse_rows = []

    def f(v: float | None, pct: bool = True) -> str:
        return "-" if v is None else (f"{100 * v:.1f}" if pct else f"{v:.3f}")

    for key in sorted(k for k in before if k[3] == "screens" and k in after):
        world, attack, rate, _ = key
        b, a = before[key], after[key]
        worse = []
        for field, limit in LIMITS.items():
            if b[field] is None or a[field] is None:
                continue
            change = a[field] - b[field]  # type: ignore[operator]
            if (limit > 0 and change > limit) or (limit < 0 and change < limit):
                worse.append(field)
        won = _won(before, world, attack, rate)
        if won and worse:
            worse_rows.append(f"{world} {attack} {rate}: {', '.join(worse)}")
        cells = [f"{f(b[k], k != 'retention')} -> {f(a[k], k != 'retention')}" for k in LIMITS]
        lines.append(f"| {world} | {attack} {100 * rate:g} % | {'yes' if won else 'no'} | " + " | ".join(cells)
                     + f" | {', '.join(worse) or '-'} |")
    noise = {field: [abs(after[k][field] - before[k][field]) for k in before  # type: ignore[operator]
                     if k[3] == "none" and k in after and before[k][field] is not None and after[k][field] is not None]
             for field in ("success", "new_accuracy", "retention")}
    lines += ["", "Undefended rows (the noise floor): mean / largest absolute change of "
              + "; ".join(f"{field} {np.mean(v):.3f} / {np.max(v):.3f}" for field, v in noise.items() if v)]
    return "\n".join(lines), worse_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    table, worse = compare(json.loads(args.before.read_text())["rows"], json.loads(args.after.read_text())["rows"])
    print(table)
    print(f"\nrows the screens won before that got worse: {len(worse)}")
    for line in worse:
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
