"""Poisoned feedback against the learning service's update, with and without the screens.

A clean model of earlier tasks (class-incremental, EWC + replay, saved with `save_run` as `lifelong
serve` serves it) receives a feedback stream that teaches a new task; part of the stream is poison.
Each update is the service's own: `lifelong.service.worker.train_candidate` (the same Learner, the
strategy carried from the saved model, the service's default update settings) on the feedback that
survives the defence, gated by `lifelong.service.gate.decide` (inside `train_candidate`).

Worlds:
- fmnist: Fashion-MNIST, MLP 784-400-400; learned: {T-shirt, Trouser}, {Dress, Bag}; new task:
  {Sandal, Sneaker, Ankle boot}; 2,000 feedback examples; 20 honest keys.
- clinc150: CLINC150 on the frozen all-MiniLM-L6-v2 encoder, MLP 384-256 (the serve demo's model);
  learned: the first 5 domains (75 intents); new task: the next 2 domains (30 intents); 1,500
  feedback queries; 20 honest keys.

Attacks (poison replaces that share of the stream, sent by 3 attacker keys unless said otherwise):
- random: examples of the new task with a random other label of the new task;
- targeted: class A examples labelled B (fmnist: Sneaker -> Sandal; clinc150: two intents of one new
  domain, drawn by the seed); success: share of A test inputs answered B;
- backdoor: inputs of every other class with a trigger (fmnist: a 4x4 checkerboard in the bottom
  right corner; clinc150: the rare tokens "mn bb cf" inserted at a random word), labelled with a
  target class of the new task; success: share of triggered test inputs of other classes answered
  with the target;
- forgetting: inputs of the learned tasks with random wrong labels;
- flood: one key sends the whole poison share, with the targeted attack's content;
- targeted-sybil (30 %): the targeted attack from 20 attacker keys, as many as the honest ones;
- backdoor-camouflage (10 %): the backdoor attack, each attacker key also sending as many clean
  examples as poisoned ones.

Defences: none; screens (`lifelong.screening`, the defaults); the Adversarial Robustness Toolbox's
SpectralSignatureDefense and ActivationDefence (the peers) on the same penultimate features of the
current model, their options chosen on the validation scenarios like ours.

Measured per attack x rate x defence (mean over seeds): retention of the learned tasks (test accuracy
after / before the update, averaged over tasks), accuracy on the new task's test set, attack success,
detection precision and recall, the share of clean feedback held, and the gate's verdict at 1 point
(the service's default) and at 3 points (the serve demo's tolerance: in class-incremental learning 30
more classes cost old classes more than a point even for joint training).

Tuning (`--tune`): detection only, on validation scenarios whose data the reported runs never use
(fmnist: the last 10,000 training images; clinc150: two other new domains, the 8th and 9th) and seeds
100+; it writes results/poisoning-tuning.json, which the reported run reads.

    python benchmarks/poisoning.py            # the full benchmark (results/poisoning.json)
    python benchmarks/poisoning.py --quick    # a smoke run (results/poisoning-quick.json)
    python benchmarks/poisoning.py --tune     # choose the thresholds on validation scenarios
"""

from __future__ import annotations

import argparse
import json
import sys
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
from poisoning_worlds import Scenario, World, clinc_world, fmnist_world, make_scenario, train_base
from torch import Tensor

from lifelong.checkpoint import load_model
from lifelong.models import ContinualClassifier
from lifelong.reporting import environment, write_json
from lifelong.screening import ScreenConfig, training_data
from lifelong.service.gate import decide
from lifelong.service.worker import UpdateSettings, train_candidate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
TUNING = RESULTS / "poisoning-tuning.json"
ATTACKS: dict[str, tuple[float, ...]] = {
    "random": (0.1, 0.3, 0.5), "targeted": (0.1, 0.3, 0.5), "backdoor": (0.01, 0.05, 0.1, 0.3, 0.5),
    "forgetting": (0.1, 0.3, 0.5), "flood": (0.1, 0.3, 0.5), "targeted-sybil": (0.3,), "backdoor-camouflage": (0.1,)}
QUICK_ATTACKS: dict[str, tuple[float, ...]] = {
    "random": (0.3,), "targeted": (0.3,), "backdoor": (0.05,), "forgetting": (0.3,), "flood": (0.3,)}
DEFENCES = ("none", "screens", "art-spectral", "art-activation")
# --------------------------------------------------------------------------------------------------
# an update and its evaluation


@torch.no_grad()
def _predict(model: ContinualClassifier, x: Tensor, position: int) -> Tensor:
    model.eval()
    out = []
    for start in range(0, len(x), 2000):
        xb = x[start: start + 2000]
        out.append(model(xb, torch.full((len(xb),), position, dtype=torch.long)).argmax(1))
    return torch.cat(out)


def evaluate(world: World, model: ContinualClassifier, names: Sequence[str], position: int) -> dict[str, Any]:
    """Test accuracy per learned task and on the new task, and both attacks' success."""
    assert world.test is not None and world.triggered_test is not None
    x, y = world.test
    truth = [world.labels[int(c)] for c in y]
    pred = [names[int(p)] for p in _predict(model, x, position)]
    right = torch.tensor([p == t for p, t in zip(pred, truth, strict=True)])
    old = [float(right[torch.isin(y, torch.tensor(t))].float().mean()) for t in world.old_tasks]
    new = float(right[torch.isin(y, torch.tensor(world.new))].float().mean())
    a, b = world.pair
    a_rows = (y == a).nonzero().squeeze(1).tolist()
    flip = sum(pred[i] == world.labels[b] for i in a_rows) / len(a_rows)
    trig = [names[int(p)] for p in _predict(model, world.triggered_test, position)]
    backdoor = sum(p == world.labels[world.target] for p in trig) / len(trig)
    return {"old": old, "new": new, "flip_success": flip, "backdoor_success": backdoor}


def run_update(world: World, sc: Scenario, held: Sequence[int], seed: int) -> dict[str, Any]:
    """Train the service's candidate on the feedback the defence kept; evaluate it and the gate."""
    assert world.base_dir is not None
    parent = load_model(world.base_dir)
    ids = list(range(len(sc.labels)))
    held_set = set(held)
    keep = [i for i in ids if i not in held_set]
    x, labels, kept_ids = sc.x[torch.tensor(keep, dtype=torch.long)], [sc.labels[i] for i in keep], keep
    settings = UpdateSettings()
    started = time.perf_counter()
    cand = train_candidate(parent, x, labels, kept_ids, settings, "feedback", seed=seed)
    seconds = time.perf_counter() - started
    position = len(cand.spec.tasks) - 1
    after = evaluate(world, cand.model, cand.spec.labels, position)
    matrix = cand.report["accuracy_matrix"]
    checks = cand.report["checks"]
    loose = decide(matrix["values"][0], matrix["values"][1], matrix["columns"], [c["size"] for c in checks], 0.03)
    return {**after, "gate_1pt": bool(cand.report["passed"]), "gate_3pt": bool(loose["passed"]),
            "gate_failed": cand.report["failed"], "train_seconds": round(seconds, 2), "trained_on": len(keep)}


def before(world: World) -> dict[str, Any]:
    assert world.base_dir is not None
    parent = load_model(world.base_dir)
    return evaluate(world, parent.model, parent.spec.labels, len(parent.spec.tasks) - 1)


# --------------------------------------------------------------------------------------------------
# tuning (validation scenarios, detection only)

SCREEN_GRID: list[dict[str, Any]] = [
    {"knn_share": k, "support": s} for k in (0.3, 0.6) for s in (0.1, 0.2, 0.35)]
SPECTRAL_GRID = (0.05, 0.1, 0.2, 0.33)
ACTIVATION_GRID = ("smaller", "relative-size", "distance", "silhouette-scores")
TUNE_ATTACKS: dict[str, tuple[float, ...]] = {
    "clean": (0.0,), "random": (0.1, 0.3), "targeted": (0.1, 0.3), "backdoor": (0.01, 0.05, 0.1, 0.3),
    "forgetting": (0.1, 0.3), "flood": (0.1, 0.3)}


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


def tune_world(name: str, seeds: Sequence[int], work: Path) -> dict[str, Any]:
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
                for i, params in enumerate(SCREEN_GRID):
                    held, _ = defend_screens(saved, sc, replace(ScreenConfig(), **params))
                    results.setdefault(f"screens:{i}", []).append({"attack": attack, "rate": rate,
                                                                   **detection(held, sc.poison)})
                for kind, options in (("spectral", SPECTRAL_GRID), ("activation", ACTIVATION_GRID)):
                    for option in options:
                        try:
                            held, _ = defend_art(saved, sc, kind, option)
                            row: dict[str, Any] = detection(held, sc.poison)
                        except Exception as exc:  # ART 1.20.1's relative-size analysis fails under numpy 2
                            row = {"recall": None, "clean_held": 1.0, "error": f"{type(exc).__name__}: {exc}"}
                        results.setdefault(f"art-{kind}:{option}", []).append(row)
    return results


def tune(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    worlds = ["fmnist", "clinc150"]
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.jobs) as pool:
        parts = dict(zip(worlds, pool.map(tune_world, worlds, [(0,)] * 2, [Path(tmp)] * 2), strict=True))
    chosen: dict[str, Any] = {}
    scores: dict[str, dict[str, float]] = {}
    for family in ("screens", "art-spectral", "art-activation"):
        keys = [k for k in parts["fmnist"] if k.startswith(family + ":")]
        scores[family] = {k: sum(_objective(parts[w][k]) for w in worlds) / len(worlds) for k in keys}
        best = max(keys, key=lambda k: scores[family][k])
        option = best.split(":", 1)[1]
        chosen[family] = SCREEN_GRID[int(option)] if family == "screens" else (
            float(option) if family == "art-spectral" else option)
    for family, table in scores.items():
        print(f"\n{family}: objective (mean recall - 2 x mean clean held; > 5 % clean held disqualifies)")
        for k, v in sorted(table.items(), key=lambda kv: -kv[1]):
            shown: Any = SCREEN_GRID[int(k.split(':')[1])] if family == "screens" else k.split(":", 1)[1]
            summary = {w: (round(float(np.mean([r["recall"] for r in parts[w][k] if r["recall"] is not None]
                                               or [0.0])), 3),
                           round(max(r["clean_held"] for r in parts[w][k]), 3)) for w in worlds}
            print(f"  {v:+.3f}  {shown}  (recall, max clean held) {summary}")
    write_json(TUNING, {"chosen": chosen, "scores": scores, "grid": SCREEN_GRID, "details": parts,
                        "seconds": time.perf_counter() - started, "environment": environment()})
    print(f"\nchosen: {chosen}\nwrote {TUNING} in {time.perf_counter() - started:.0f} s")
    return 0


# --------------------------------------------------------------------------------------------------
# the benchmark


def load_tuning() -> dict[str, Any]:
    if TUNING.exists():
        return dict(json.loads(TUNING.read_text())["chosen"])
    return {"screens": {}, "art-spectral": 0.1, "art-activation": "smaller"}


def run_world(name: str, seed: int, attacks: dict[str, tuple[float, ...]], defences: Sequence[str],
              size: int | None, work: Path, tuning: dict[str, Any]) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    world = (fmnist_world if name == "fmnist" else clinc_world)("report", seed)
    if size:
        world.feedback = size
    started = time.perf_counter()
    world.base_dir = train_base(world, seed, work / f"{name}-{seed}")
    base_seconds = time.perf_counter() - started
    saved = load_model(world.base_dir)
    start_acc = before(world)
    config = replace(ScreenConfig(), **tuning.get("screens", {}))
    rows = []
    grid = [("clean", 0.0)] + [(a, r) for a, rates in attacks.items() for r in rates]
    for attack, rate in grid:
        sc = make_scenario(world, "targeted" if attack == "clean" else attack, rate, seed)
        for defence in defences:
            t0 = time.perf_counter()
            info: dict[str, Any] = {}
            if defence == "none":
                held: list[int] = []
            elif defence == "screens":
                held, info = defend_screens(saved, sc, config)
            elif defence == "art-spectral":
                held, info = defend_art(saved, sc, "spectral", tuning["art-spectral"])
            else:
                held, info = defend_art(saved, sc, "activation", tuning["art-activation"])
            screen_seconds = time.perf_counter() - t0
            kept_x, _, _ = training_data(sc.x, sc.labels, list(range(len(sc.labels))),
                                         _held_result(len(sc.labels), held))
            assert len(kept_x) == len(sc.labels) - len(set(held))
            result = run_update(world, sc, held, seed)
            retention = float(np.mean([a / max(b, 1e-9) for a, b in zip(result["old"], start_acc["old"],
                                                                         strict=True)]))
            rows.append({"world": name, "seed": seed, "attack": attack, "rate": rate, "defence": defence,
                         "retention": retention, "new_accuracy": result["new"],
                         "flip_success": result["flip_success"], "backdoor_success": result["backdoor_success"],
                         **detection(held, sc.poison), "gate_1pt": result["gate_1pt"],
                         "gate_3pt": result["gate_3pt"], "gate_failed": result["gate_failed"],
                         "old_accuracy": result["old"], "screen_seconds": round(screen_seconds, 2),
                         "train_seconds": result["train_seconds"], "screen_info": info,
                         "before": start_acc, "base_seconds": round(base_seconds, 1)})
            print(f"  {name} seed {seed} {attack:19s} {rate:4.2f} {defence:14s} ret {retention:.3f} "
                  f"new {result['new']:.3f} flip {result['flip_success']:.3f} bd {result['backdoor_success']:.3f} "
                  f"held {len(set(held)):4d} gate {int(result['gate_1pt'])}{int(result['gate_3pt'])}", flush=True)
    return rows


def _held_result(n: int, held: Sequence[int]) -> Any:
    from lifelong.screening import Hold, ScreenResult

    return ScreenResult(list(range(n)), [Hold(i, i, "benchmark", "held by the defence", 1.0) for i in held])


SUCCESS = {"random": None, "targeted": "flip_success", "flood": "flip_success", "targeted-sybil": "flip_success",
           "backdoor": "backdoor_success", "backdoor-camouflage": "backdoor_success", "forgetting": None,
           "clean": None}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds per world x attack x rate x defence."""
    keys: dict[tuple[str, str, float, str], list[dict[str, Any]]] = {}
    for r in rows:
        keys.setdefault((r["world"], r["attack"], r["rate"], r["defence"]), []).append(r)
    out = []
    for (world, attack, rate, defence), group in keys.items():
        def mean(field: str, rows: list[dict[str, Any]] = group) -> float | None:
            values = [r[field] for r in rows if r[field] is not None]
            return float(np.mean(values)) if values else None
        metric = SUCCESS[attack]
        out.append({"world": world, "attack": attack, "rate": rate, "defence": defence, "seeds": len(group),
                    "retention": mean("retention"), "new_accuracy": mean("new_accuracy"),
                    "success": mean(metric) if metric else None, "success_metric": metric,
                    "flip_success": mean("flip_success"), "backdoor_success": mean("backdoor_success"),
                    "precision": mean("precision"), "recall": mean("recall"), "clean_held": mean("clean_held"),
                    "gate_1pt": mean("gate_1pt"), "gate_3pt": mean("gate_3pt")})
    return out


def targets(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets at poison rates up to 30 %, for the screens and for each peer."""
    index = {(s["world"], s["attack"], s["rate"], s["defence"]): s for s in summary}
    out = []
    for s in summary:
        if s["defence"] == "none" or s["attack"] == "clean" or s["rate"] > 0.3:
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
            success = _fmt(s["success"]) + (" (flip)" if s["success_metric"] == "flip_success" else
                                            " (trigger)" if s["success_metric"] == "backdoor_success" else "")
            gate = f"{_fmt(s['gate_1pt'])} / {_fmt(s['gate_3pt'])}"
            lines.append(f"| {s['attack']} | {100 * s['rate']:g} % | {s['defence']} | {_fmt(s['retention'], False)} "
                         f"| {_fmt(s['new_accuracy'])} | {success if s['success_metric'] else '-'} "
                         f"| {_fmt(s['precision'])} | {_fmt(s['recall'])} | {_fmt(s['clean_held'])} | {gate} |")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: one seed, 600 examples, 5 attacks")
    parser.add_argument("--tune", action="store_true", help="choose thresholds on validation scenarios")
    parser.add_argument("--worlds", default="fmnist,clinc150")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--jobs", type=int, default=2, help="processes (one thread each)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.tune:
        return tune(args)
    started = time.perf_counter()
    worlds = args.worlds.split(",")
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    attacks = QUICK_ATTACKS if args.quick else ATTACKS
    size = 600 if args.quick else None
    tuning = load_tuning()
    out = Path(args.out or RESULTS / ("poisoning-quick.json" if args.quick else "poisoning.json"))
    jobs = [(w, s) for w in worlds for s in seeds]
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_world, w, s, attacks, DEFENCES, size, Path(tmp), tuning) for w, s in jobs]
        rows = [r for f in futures for r in f.result()]
    summary = summarise(rows)
    table = print_tables(summary)
    checks = targets(summary)
    missed = [c for c in checks if c["defence"] == "screens" and (
        not all(v for k, v in c.items() if k.endswith("_ok")) or any(c[k] for k in c if k.startswith("worse_than")))]
    print(f"\nscreens: {len(missed)} of {sum(c['defence'] == 'screens' for c in checks)} attack x rate lines "
          "(<= 30 %) miss a target or do worse than a peer on a line:")
    for c in missed:
        print("  " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in c.items()))
    seconds = time.perf_counter() - started
    write_json(out, {"command": " ".join(["python", "benchmarks/poisoning.py", *(argv or sys.argv[1:])]),
                     "seconds": seconds, "worlds": worlds, "seeds": seeds, "attacks": attacks,
                     "defences": list(DEFENCES), "tuning": tuning, "update_settings": UpdateSettings().to_dict(),
                     "screen_config": replace(ScreenConfig(), **tuning.get("screens", {})).to_dict(),
                     "summary": summary, "targets": checks, "rows": rows, "table": table,
                     "environment": environment()})
    print(f"\nwrote {out} in {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
