"""Poisoned feedback against the learning service's update, with and without the screens.

A clean model of earlier tasks (class-incremental, EWC + replay, saved with `save_run` as `lifelong
serve` serves it) receives a feedback stream that teaches a new task; part of the stream is poison.
Each update is the service's own: `lifelong.service.worker.train_candidate` (the same Learner, the
strategy carried from the saved model, the service's default update settings) on the feedback that
survives the defence, gated by `lifelong.service.gate.decide` (inside `train_candidate`); with the
screens, through `lifelong.service.influence.train_with_influence` (the influence check at the gate,
which may hold a cluster found in the trained candidate's representation and train a second one).

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
- targeted-sybil (10, 30, 45 %): the targeted attack from 20 attacker keys, as many as the honest ones;
- backdoor-camouflage (10 %): the backdoor attack, each attacker key also sending as many clean
  examples as poisoned ones;
- attackers who know the screens (benchmarks/poisoning_adaptive.py): adaptive-split (30 %, the
  targeted flip over 60 keys that also send clean examples), adaptive-boundary (30 %, only the A
  inputs most like B, 20 keys), adaptive-collision (10 %, clean-label feature collisions on 5 target
  A test inputs, 20 keys; success: the share of the targets answered B).

Defences: none; screens (`lifelong.screening`, the defaults); the Adversarial Robustness Toolbox's
SpectralSignatureDefense and ActivationDefence (the peers) on the same penultimate features of the
current model, their options chosen on the validation scenarios like ours.

Measured per attack x rate x defence (mean over seeds; 3 by default): retention of the learned tasks
(test accuracy after / before the update, averaged over tasks), accuracy on the new task's test set,
attack success,
detection precision and recall, the share of clean feedback held, and the gate's verdict at 1 point
(the service's default) and at 3 points (the serve demo's tolerance: in class-incremental learning 30
more classes cost old classes more than a point even for joint training).

Tuning (`--tune`, benchmarks/poisoning_tune.py): detection only, on validation scenarios whose data
the reported runs never use (fmnist: the last 10,000 training images; clinc150: two other new
domains, the 8th and 9th) and seeds 100+; it writes results/poisoning-tuning.json, which the reported
run reads. Every finished row is appended to results/poisoning-progress/ as it is measured; `--resume`
continues an interrupted run from there (the folder is removed once the results file is written).

    python benchmarks/poisoning.py            # the full benchmark (results/poisoning.json)
    python benchmarks/poisoning.py --quick    # a smoke run (results/poisoning-quick.json)
    python benchmarks/poisoning.py --tune     # choose the thresholds on validation scenarios
    python benchmarks/poisoning.py --resume   # continue an interrupted run
"""

from __future__ import annotations

import argparse
import json
import shutil
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
from poisoning_progress import progress_file, rerun_progress
from poisoning_tables import print_tables, summarise, sybil_targets, target_line, targets
from poisoning_tune import RESULTS, TUNING, load_tuning, tune
from poisoning_worlds import Scenario, World, clinc_world, fmnist_world, make_scenario, train_base
from torch import Tensor

from lifelong.checkpoint import load_model
from lifelong.models import ContinualClassifier
from lifelong.reporting import environment, write_json
from lifelong.screening import ScreenConfig, training_data
from lifelong.service.gate import decide
from lifelong.service.influence import train_with_influence
from lifelong.service.worker import UpdateSettings, train_candidate

ROOT = Path(__file__).resolve().parent.parent
ATTACKS: dict[str, tuple[float, ...]] = {
    "random": (0.1, 0.3, 0.5), "targeted": (0.1, 0.3, 0.5), "backdoor": (0.01, 0.05, 0.1, 0.3, 0.5),
    "forgetting": (0.1, 0.3, 0.5), "flood": (0.1, 0.3, 0.5), "targeted-sybil": (0.1, 0.3, 0.45),
    "backdoor-camouflage": (0.1,), "adaptive-split": (0.3,), "adaptive-boundary": (0.3,), "adaptive-collision": (0.1,)}
QUICK_ATTACKS: dict[str, tuple[float, ...]] = {
    "random": (0.3,), "targeted": (0.3,), "backdoor": (0.05,), "forgetting": (0.3,), "flood": (0.3,)}
DEFENCES = ("none", "screens", "art-spectral", "art-activation")
# issue 22's attacks (and the clean row): with --peers new, ART's defences run on these only
NEW_ATTACKS = ("clean", "targeted-sybil", "adaptive-split", "adaptive-boundary", "adaptive-collision")
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


def evaluate(world: World, model: ContinualClassifier, names: Sequence[str], position: int,
             targets: Tensor | None = None) -> dict[str, Any]:
    """Test accuracy per learned task and on the new task, and the attacks' success (a feature
    collision's: the share of its `targets` answered B)."""
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
    collision = None
    if targets is not None:
        collision = sum(names[int(p)] == world.labels[b] for p in _predict(model, targets, position)) / len(targets)
    return {"old": old, "new": new, "flip_success": flip, "backdoor_success": backdoor, "collision_success": collision}


def run_update(world: World, sc: Scenario, held: Sequence[int], seed: int,
               config: ScreenConfig | None = None) -> dict[str, Any]:
    """Train the service's candidate on the feedback the defence kept (with `config.influence`, through
    the influence check at the gate, as the service does); evaluate it and the gate."""
    assert world.base_dir is not None
    parent = load_model(world.base_dir)
    ids = list(range(len(sc.labels)))
    held_set = set(held)
    keep = [i for i in ids if i not in held_set]
    x, labels, kept_ids = sc.x[torch.tensor(keep, dtype=torch.long)], [sc.labels[i] for i in keep], keep
    settings = UpdateSettings()
    started = time.perf_counter()
    influence: dict[str, Any] | None = None
    influence_held: list[int] = []
    if config is not None and config.influence:
        checked = train_with_influence(parent, x, labels, kept_ids, settings, config, "feedback", seed)
        cand, influence = checked.candidate, checked.report
        influence_held = sorted(kept_ids[p] for p in checked.held)
    else:
        cand = train_candidate(parent, x, labels, kept_ids, settings, "feedback", seed=seed)
    seconds = time.perf_counter() - started
    position = len(cand.spec.tasks) - 1
    after = evaluate(world, cand.model, cand.spec.labels, position, sc.targets)
    matrix = cand.report["accuracy_matrix"]
    checks = cand.report["checks"]
    loose = decide(matrix["values"][0], matrix["values"][1], matrix["columns"], [c["size"] for c in checks], 0.03)
    return {**after, "gate_1pt": bool(cand.report["passed"]), "gate_3pt": bool(loose["passed"]),
            "gate_failed": cand.report["failed"], "train_seconds": round(seconds, 2),
            "trained_on": len(keep) - len(influence_held), "influence": influence, "influence_held": influence_held}


def before(world: World) -> dict[str, Any]:
    assert world.base_dir is not None
    parent = load_model(world.base_dir)
    return evaluate(world, parent.model, parent.spec.labels, len(parent.spec.tasks) - 1)


# --------------------------------------------------------------------------------------------------
# the benchmark


def run_world(name: str, seed: int, attacks: dict[str, tuple[float, ...]], defences: Sequence[str],
              size: int | None, work: Path, tuning: dict[str, Any], progress: Path,
              peers: str = "all") -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    header = {"world": name, "seed": seed, "size": size, "tuning": tuning, "defences": list(defences)}
    path, done = progress_file(progress, name, seed, json.loads(json.dumps(header)))
    # issue 22's attacks first: an interrupted run has the rows its targets need
    ordered = sorted(attacks.items(), key=lambda item: item[0] not in NEW_ATTACKS)
    grid = [("clean", 0.0)] + [(a, r) for a, rates in ordered for r in rates]

    def defences_for(attack: str) -> list[str]:
        chosen = [d for d in defences if not d.startswith("art-") or peers == "all" or attack in NEW_ATTACKS]
        # the sybil rows also train on exactly the clean part (an oracle defence): the best any defence can do
        return [*chosen, "oracle"] if attack == "targeted-sybil" else chosen

    if all((a, r, d) in done for a, r in grid for d in defences_for(a)):
        return [done[(a, r, d)] for a, r in grid for d in defences_for(a)]
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
    for attack, rate in grid:
        if all((attack, rate, d) in done for d in defences_for(attack)):
            rows += [done[(attack, rate, d)] for d in defences_for(attack)]
            continue
        sc = make_scenario(world, "targeted" if attack == "clean" else attack, rate, seed, saved=saved)
        for defence in defences_for(attack):
            if (attack, rate, defence) in done:
                rows.append(done[(attack, rate, defence)])
                continue
            t0 = time.perf_counter()
            info: dict[str, Any] = {}
            if defence == "none":
                held: list[int] = []
            elif defence == "oracle":
                held = sc.poison.nonzero().squeeze(1).tolist()
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
            result = run_update(world, sc, held, seed, config if defence == "screens" else None)
            everything = sorted(set(held) | set(result["influence_held"]))
            retention = float(np.mean([a / max(b, 1e-9) for a, b in zip(result["old"], start_acc["old"],
                                                                         strict=True)]))
            row = {"world": name, "seed": seed, "attack": attack, "rate": rate, "defence": defence,
                   "retention": retention, "new_accuracy": result["new"],
                   "flip_success": result["flip_success"], "backdoor_success": result["backdoor_success"],
                   "collision_success": result["collision_success"],
                   **detection(everything, sc.poison), "screens_only": detection(held, sc.poison),
                   "influence": result["influence"], "gate_1pt": result["gate_1pt"],
                   "gate_3pt": result["gate_3pt"], "gate_failed": result["gate_failed"],
                   "old_accuracy": result["old"], "screen_seconds": round(screen_seconds, 2),
                   "train_seconds": result["train_seconds"], "screen_info": info,
                   "before": start_acc, "base_seconds": round(base_seconds, 1), "code": CODE}
            rows.append(row)
            with path.open("a") as f:  # saved as it goes: --resume continues from here
                f.write(json.dumps(row) + "\n")
            collided = "" if result["collision_success"] is None else f" coll {result['collision_success']:.3f}"
            print(f"  {name} seed {seed} {attack:19s} {rate:4.2f} {defence:14s} ret {retention:.3f} "
                  f"new {result['new']:.3f} flip {result['flip_success']:.3f} bd {result['backdoor_success']:.3f}"
                  f"{collided} held {len(everything):4d} gate {int(result['gate_1pt'])}{int(result['gate_3pt'])}",
                  flush=True)
    return rows


def _commit() -> str | None:
    """The commit of the code that measured a row (rows of reruns differ from the rest of the file)."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


CODE = _commit()  # at import: the code this process runs, whatever is committed while it runs


def _held_result(n: int, held: Sequence[int]) -> Any:
    from lifelong.screening import Hold, ScreenResult

    return ScreenResult(list(range(n)), [Hold(i, i, "benchmark", "held by the defence", 1.0) for i in held])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: one seed, 600 examples, 5 attacks")
    parser.add_argument("--tune", action="store_true", help="choose thresholds on validation scenarios")
    parser.add_argument("--tune-families", default="screens,art-spectral,art-activation",
                        help="with --tune: the defences to tune (the others' choices are carried over)")
    parser.add_argument("--worlds", default="fmnist,clinc150")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--attacks", default=None, help="only these attacks (comma-separated; 'clean' always runs)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (one thread each)")
    parser.add_argument("--resume", action="store_true", help="continue from the progress files of an interrupted run")
    parser.add_argument("--seeds-existing", default=None,
                        help="seeds for the attacks before issue 22 (default: --seeds); the others run the clean row "
                             "and issue 22's attacks only, to save CPU")
    parser.add_argument("--peers", choices=("all", "new"), default="all",
                        help="run ART's defences on every attack, or only on the clean row and issue 22's attacks "
                             "(targeted-sybil, adaptive-*), to save CPU")
    parser.add_argument("--rerun", default=None, metavar="DEFENCES",
                        help="with --resume: measure these defences' rows again (comma-separated), keeping the "
                             "others; where no progress files are left, the results file's rows are the start")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.tune:
        return tune(args, TUNING)
    started = time.perf_counter()
    worlds = args.worlds.split(",")
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    attacks = dict(QUICK_ATTACKS if args.quick else ATTACKS)
    if args.attacks:
        wanted = args.attacks.split(",")
        unknown = set(wanted) - set(ATTACKS) - {"clean"}
        if unknown:
            parser.error(f"unknown attack(s) {sorted(unknown)}; choose from {', '.join(ATTACKS)}")
        attacks = {a: r for a, r in ATTACKS.items() if a in wanted}
    size = 600 if args.quick else None
    tuning = load_tuning()
    out = Path(args.out or RESULTS / ("poisoning-quick.json" if args.quick else "poisoning.json"))
    progress = out.with_name(out.stem + "-progress")
    if progress.exists() and not args.resume:
        shutil.rmtree(progress)
    progress.mkdir(parents=True, exist_ok=True)
    existing = seeds if args.seeds_existing is None else [int(s) for s in args.seeds_existing.split(",")]
    if args.rerun:
        if not args.resume:
            parser.error("--rerun needs --resume")
        rerun_progress(progress, out, args.rerun.split(","), DEFENCES, tuning,
                       args.attacks.split(",") if args.attacks else None)

    def attacks_for(seed: int) -> dict[str, tuple[float, ...]]:
        return attacks if seed in existing else {a: r for a, r in attacks.items() if a in NEW_ATTACKS}

    jobs = [(w, s) for s in seeds for w in worlds]
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_world, w, s, attacks_for(s), DEFENCES, size, Path(tmp), tuning, progress,
                               args.peers) for w, s in jobs]
        rows = [r for f in futures for r in f.result()]
    # with --attacks and --resume, the other attacks' rows in the progress files (an earlier run's) are kept
    measured = {(r["world"], r["seed"], r["attack"], r["rate"], r["defence"]) for r in rows}
    for path in sorted(progress.glob("*.jsonl")):
        for line in path.read_text().splitlines()[1:]:
            r = json.loads(line)
            if (r["world"], r["seed"], r["attack"], r["rate"], r["defence"]) not in measured:
                rows.append(r)
    summary = summarise(rows)
    table = print_tables(summary)
    checks = targets(summary)
    missed = [c for c in checks if c["defence"] == "screens" and (
        not all(v for k, v in c.items() if k.endswith("_ok")) or any(c[k] for k in c if k.startswith("worse_than")))]
    print(f"\nscreens: {len(missed)} of {sum(c['defence'] == 'screens' for c in checks)} attack x rate lines "
          "(<= 30 %) miss a target or do worse than a peer on a line:")
    for c in missed:
        print(target_line(c))
    sybil = sybil_targets(summary)
    for target in sybil:
        print(target_line(target))
    seconds = time.perf_counter() - started
    # a rerun keeps the earlier commands that measured the rows it kept
    history: list[str] = []
    if args.resume and out.exists():
        earlier = json.loads(out.read_text())
        history = [*earlier.get("history", []), earlier["command"]]
    write_json(out, {"command": " ".join(["python", "benchmarks/poisoning.py", *(argv or sys.argv[1:])]),
                     "history": history,
                     "seconds": seconds, "worlds": worlds, "seeds": seeds, "seeds_existing": existing,
                     "attacks": attacks, "peers": args.peers,
                     "defences": list(DEFENCES), "tuning": tuning, "update_settings": UpdateSettings().to_dict(),
                     "screen_config": replace(ScreenConfig(), **tuning.get("screens", {})).to_dict(),
                     "summary": summary, "targets": checks, "sybil_targets": sybil, "rows": rows, "table": table,
                     "environment": environment()})
    shutil.rmtree(progress)
    print(f"\nwrote {out} in {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
