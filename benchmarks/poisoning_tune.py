"""Tuning the poisoning benchmark's defences on validation scenarios (detection only): thresholds of
lifelong's screens and the options of ART's detectors, chosen on data the reported runs never use
(fmnist: the last 10,000 training images; clinc150: the 8th and 9th domains) and seeds 100+.

The screens' grid is the label-noise screen's options (SCREEN_GRID) crossed with the label-collision
screen's (COLLISION_GRID); since the other screens do not depend on the collision options, each
scenario runs the other screens once per SCREEN_GRID entry, and the collision screen once per
COLLISION_GRID entry on every example; each pair holds the union (as `lifelong.screening.screen` runs it; the file in
results/ was written this way). `--tune-families screens` tunes the screens
only and carries ART's chosen options over from the existing tuning file (said so in the file).
The influence check at the gate trains candidates, and is not tuned (its tolerance is 0: removing a
cluster may cost the new task nothing).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from poisoning_defences import defend_art, defend_screens, detection
from poisoning_worlds import clinc_world, fmnist_world, make_scenario, train_base

from lifelong.checkpoint import load_model
from lifelong.reporting import environment, write_json
from lifelong.screening import ScreenConfig

RESULTS = Path(__file__).resolve().parent.parent / "results"
TUNING = RESULTS / "poisoning-tuning.json"  # written by --tune, read by every reported run

SCREEN_GRID: list[dict[str, Any]] = [
    {"knn_share": k, "support": s} for k in (0.3, 0.6) for s in (0.1, 0.2, 0.35)]
COLLISION_GRID: list[dict[str, Any]] = [
    {"collision_posterior": p, "collision_vote": v, "collision_min_share": m}
    for p in (0.5, 0.7) for v in (1.0, 0.5) for m in (0.05, 0.1)]
SPECTRAL_GRID = (0.05, 0.1, 0.2, 0.33)
ACTIVATION_GRID = ("smaller", "relative-size", "distance", "silhouette-scores")
TUNE_ATTACKS: dict[str, tuple[float, ...]] = {
    "clean": (0.0,), "random": (0.1, 0.3), "targeted": (0.1, 0.3), "backdoor": (0.01, 0.05, 0.1, 0.3),
    "forgetting": (0.1, 0.3), "flood": (0.1, 0.3), "targeted-sybil": (0.1, 0.3)}
FAMILIES = ("screens", "art-spectral", "art-activation")


def _objective(rows: list[dict[str, Any]]) -> float:
    """Mean recall over poisoned scenarios minus twice the mean share of clean feedback held, and
    any scenario holding more than 5 % of clean feedback disqualifies."""
    if any("error" in r for r in rows):
        return -10.0  # the option does not run
    recall = [r["recall"] for r in rows if r["recall"] is not None]
    clean = [r["clean_held"] for r in rows]
    if max(clean) > 0.05:
        return -1.0 + float(np.mean(recall)) - 2 * float(np.mean(clean)) - 10 * (max(clean) - 0.05)
    return float(np.mean(recall)) - 2 * float(np.mean(clean))


def _screens(saved: Any, sc: Any, attack: str, rate: float) -> dict[str, dict[str, Any]]:
    """Detection of every screens combination on one scenario: the other screens once per SCREEN_GRID
    entry, the collision screen once per COLLISION_GRID entry on every example, the union held, as
    `screen` runs it (see the module docstring)."""
    only: dict[str, Any] = {flag: False for flag in ("source_limits", "label_noise", "source_outliers", "backdoor",
                                                     "guard_agreement")}
    collided = [defend_screens(saved, sc, replace(ScreenConfig(), **extra, **only))[0] for extra in COLLISION_GRID]
    out = {}
    for i, params in enumerate(SCREEN_GRID):
        held, _ = defend_screens(saved, sc, replace(ScreenConfig(), **params, label_collisions=False))
        for j, more in enumerate(collided):
            both = sorted(set(held) | set(more))
            out[f"screens:{i}:{j}"] = {"attack": attack, "rate": rate, **detection(both, sc.poison)}
    return out


def tune_world(name: str, seeds: Sequence[int], work: Path, families: Sequence[str]) -> dict[str, Any]:
    torch.set_num_threads(1)
    results: dict[str, list[dict[str, Any]]] = {}
    for seed in seeds:
        world = (fmnist_world if name == "fmnist" else clinc_world)("tune", seed)
        report_world = (fmnist_world if name == "fmnist" else clinc_world)("report", seed)
        # the current model is the reported runs' clean model; only its feedback differs
        base = train_base(report_world, seed, work / f"{name}-tune-{seed}")
        world.base_dir = base
        saved = load_model(base)
        for attack, rates in TUNE_ATTACKS.items():
            for rate in rates:
                sc = make_scenario(world, "targeted" if attack == "clean" else attack, rate, 100 + seed)
                if "screens" in families:
                    for key, row in _screens(saved, sc, attack, rate).items():
                        results.setdefault(key, []).append(row)
                for kind, options in (("spectral", SPECTRAL_GRID), ("activation", ACTIVATION_GRID)):
                    if f"art-{kind}" not in families:
                        continue
                    for option in options:
                        try:
                            held, _ = defend_art(saved, sc, kind, option)
                            out: dict[str, Any] = detection(held, sc.poison)
                        except Exception as exc:  # ART 1.20.1's relative-size analysis fails under numpy 2
                            out = {"recall": None, "clean_held": 1.0, "error": f"{type(exc).__name__}: {exc}"}
                        results.setdefault(f"art-{kind}:{option}", []).append(out)
        print(f"  tuned {name} seed {seed}", flush=True)
    return results


def _option(family: str, key: str) -> Any:
    option = key.split(":", 1)[1]
    if family == "screens":
        i, j = (int(v) for v in option.split(":"))
        return {**SCREEN_GRID[i], **COLLISION_GRID[j]}
    return float(option) if family == "art-spectral" else option


def tune(args: argparse.Namespace, path: Path) -> int:
    started = time.perf_counter()
    families = [f for f in args.tune_families.split(",") if f]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise SystemExit(f"unknown tuning famil(ies) {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    worlds = ["fmnist", "clinc150"]
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.jobs) as pool:
        parts = dict(zip(worlds, pool.map(tune_world, worlds, [(0,)] * 2, [Path(tmp)] * 2, [families] * 2),
                         strict=True))
    previous = json.loads(path.read_text()) if path.exists() else {}
    chosen: dict[str, Any] = {}
    carried = {}
    scores: dict[str, dict[str, float]] = {}
    for family in FAMILIES:
        if family not in families:
            if family in previous.get("chosen", {}):
                chosen[family] = previous["chosen"][family]
                carried[family] = "carried over from the previous tuning file (not retuned in this run)"
            continue
        keys = [k for k in parts["fmnist"] if k.startswith(family + ":")]
        scores[family] = {k: sum(_objective(parts[w][k]) for w in worlds) / len(worlds) for k in keys}
        chosen[family] = _option(family, max(keys, key=lambda k: scores[family][k]))
    for family, table in scores.items():
        print(f"\n{family}: objective (mean recall - 2 x mean clean held; > 5 % clean held disqualifies)")
        for k, v in sorted(table.items(), key=lambda kv: -kv[1])[:12]:
            summary = {w: (round(float(np.mean([r["recall"] for r in parts[w][k] if r["recall"] is not None]
                                               or [0.0])), 3),
                           round(max(r["clean_held"] for r in parts[w][k]), 3)) for w in worlds}
            print(f"  {v:+.3f}  {_option(family, k)}  (recall, max clean held) {summary}")
    write_json(path, {"chosen": chosen, "carried": carried, "scores": scores,
                      "grid": {"screens": SCREEN_GRID, "collisions": COLLISION_GRID,
                               "art-spectral": list(SPECTRAL_GRID), "art-activation": list(ACTIVATION_GRID)},
                      "attacks": TUNE_ATTACKS, "details": parts, "seconds": time.perf_counter() - started,
                      "environment": environment()})
    print(f"\nchosen: {chosen}\nwrote {path} in {time.perf_counter() - started:.0f} s")
    return 0


def load_tuning() -> dict[str, Any]:
    """The options chosen on validation scenarios: poisoning-tuning.json's, with the label-collision
    screen's from poisoning-tuning-collisions-*.json (benchmarks/poisoning_tune_collisions.py) on top."""
    chosen: dict[str, Any] = {"screens": {}, "art-spectral": 0.1, "art-activation": "smaller"}
    if TUNING.exists():
        chosen = dict(json.loads(TUNING.read_text())["chosen"])
    # in the order they were tuned, the later on top
    for grid in ("neighbours", "estimator", "propagation", "budget", "after", "input", "steps"):
        path = RESULTS / f"poisoning-tuning-collisions-{grid}.json"
        if path.exists():
            chosen["screens"] = {**chosen.get("screens", {}), **json.loads(path.read_text())["chosen"]["screens"]}
    return chosen
