"""The source-outlier screen with and without the volume floor (`ScreenConfig.source_volume`) on
the validation scenarios of benchmarks/poisoning_tune.py (never the reported runs' data or seeds),
plus clean-label feature collisions on Fashion-MNIST: detection of all the screens together, and
the source-outlier screen's own holds, per scenario.

    python benchmarks/poisoning_sources_check.py [--worlds fmnist,clinc150] [--seeds 0,1,2]

Writes results/poisoning-sources-check.json (rows saved per world and seed as they finish; --resume).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from poisoning import load_tuning
from poisoning_defences import _learned, _reference, detection
from poisoning_tune import TUNE_ATTACKS
from poisoning_worlds import clinc_world, fmnist_world, make_scenario, train_base

from lifelong.checkpoint import load_model
from lifelong.reporting import environment, write_json
from lifelong.screening import ScreenConfig, screen_model

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "poisoning-sources-check.json"


def check_seed(name: str, seed: int, work: Path, config: ScreenConfig) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    make = fmnist_world if name == "fmnist" else clinc_world
    world = make("tune", seed)
    world.base_dir = train_base(make("report", seed), seed, work / f"{name}-{seed}")
    saved = load_model(world.base_dir)
    attacks = dict(TUNE_ATTACKS)
    if world.test is not None:  # a feature-collision attacker aims at test inputs of its class A
        attacks["adaptive-collision"] = (0.1,)
    rows: list[dict[str, Any]] = []
    for attack, rates in attacks.items():
        for rate in rates:
            sc = make_scenario(world, "targeted" if attack == "clean" else attack, rate, 100 + seed, saved=saved)
            for floor in (False, True):
                result = screen_model(saved.model, sc.x, sc.labels, sc.sources, saved.spec.labels, _learned(saved),
                                      _reference(saved), replace(config, source_volume=floor),
                                      task=len(saved.spec.tasks) - 1)
                own = sorted({h.index for h in result.holds if h.screen == "source-outlier"})
                found, own_found = detection(result.held, sc.poison), detection(own, sc.poison)
                rows.append({"world": name, "seed": seed, "attack": attack, "rate": rate, "source_volume": floor,
                             **found, "source_outlier": own_found})
                recall = found["recall"] if found["recall"] is None else round(found["recall"], 3)
                print(f"  {name} {seed} {attack:18s} {rate:4.2f} floor {int(floor)}: recall {recall} clean held "
                      f"{found['clean_held']:.3f} | source-outlier held {own_found['held']} "
                      f"clean {own_found['clean_held']:.3f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", default="fmnist,clinc150")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    config = replace(ScreenConfig(), **load_tuning().get("screens", {}))
    progress = OUT.with_name(OUT.stem + "-progress")
    progress.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in args.worlds.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                path = progress / f"{world}-{seed}.json"
                if args.resume and path.exists():
                    part = json.loads(path.read_text())
                else:
                    part = check_seed(world, seed, Path(tmp), config)
                    path.write_text(json.dumps(part))
                rows += part
    summary: dict[str, Any] = {}
    for floor in (False, True):
        for world in args.worlds.split(","):
            mine = [r for r in rows if r["source_volume"] == floor and r["world"] == world]
            recall = [r["recall"] for r in mine if r["recall"] is not None]
            clean = [r["clean_held"] for r in mine]
            summary[f"{world} floor={floor}"] = {"mean_recall": sum(recall) / len(recall),
                                                 "mean_clean_held": sum(clean) / len(clean),
                                                 "max_clean_held": max(clean)}
            print(f"{world} source_volume={floor}: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                                  summary[f'{world} floor={floor}'].items()))
    write_json(OUT, {"command": " ".join(["python", "benchmarks/poisoning_sources_check.py", *(argv or sys.argv[1:])]),
                     "screen_config": config.to_dict(), "summary": summary, "rows": rows,
                     "seconds": time.perf_counter() - started, "environment": environment()})
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
