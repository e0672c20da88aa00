"""One row of the poisoning benchmark, fast and dissected: which screen held what, what the
label-collision screen saw in each space (every pair it found, its share and reverse, per round, and
the posterior of the poison it left), and optionally the update's attack success.

    python benchmarks/poisoning_probe.py --world fmnist --attack targeted-sybil --rate 0.3 --seed 0
    python benchmarks/poisoning_probe.py ... --train              # also train the update (as the benchmark)
    python benchmarks/poisoning_probe.py ... --split tune --seed 0   # a validation scenario (seed 100 + seed)
    python benchmarks/poisoning_probe.py ... --set collision_quantile=0.05   # another ScreenConfig option
    python benchmarks/poisoning_probe.py ... --set "collision_input='random-conv'"  # images' input space

The clean model is cached under --cache (default /tmp/lifelong-poison-probe) so that repeated probes
skip its training. Reported seeds and data are the benchmark's: use this to explain a reported row,
and the tuning path (benchmarks/poisoning_tune.py) to choose thresholds.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from poisoning import load_tuning, run_update
from poisoning_defences import _learned, _reference, defend_screens, detection
from poisoning_worlds import clinc_world, fmnist_world, make_scenario, train_base

from lifelong.checkpoint import load_model
from lifelong.screening import ScreenConfig, find_collisions, represent, unit_rows
from lifelong.screening.collisions import _groups, _pair
from lifelong.screening.representation import input_features


def _pairs_report(z: torch.Tensor, labels: list[str], trusted: list[bool], poison: torch.Tensor, cfg: ScreenConfig,
                  learned: Any, space: str) -> None:
    n = len(poison)
    found = find_collisions(z, labels, trusted, cfg, learned)
    for c in found:
        rows = [r for r in c.rows if r < n]
        p = int(poison[torch.tensor(rows, dtype=torch.long)].sum()) if rows else 0
        print(f"  [{space}] {c.label!r} copies {c.copies!r}: share {c.share:.3f} reverse {c.reverse:.3f} "
              f"held {len(rows)} (poison {p}, clean {len(rows) - p})")
    if not found:
        print(f"  [{space}] no collision")


def _posterior_of_poison(z: torch.Tensor, labels: list[str], poison: torch.Tensor, pair: tuple[str, str],
                         cfg: ScreenConfig) -> None:
    """The first round of the pair (label L holding the copy, M the copied label), with the
    posterior of L's poison and clean rows, on distinct rows as the screen sees them."""
    n = len(poison)
    first = _groups(z, labels, cfg.collision_duplicate)
    unique = sorted(set(first))
    lab = [labels[r] for r in unique]
    zu = z[torch.tensor(unique)]
    rows_l = torch.tensor([i for i, v in enumerate(lab) if v == pair[0]])
    rows_m = torch.tensor([i for i, v in enumerate(lab) if v == pair[1]])
    is_poison = torch.tensor([unique[i] < n and bool(poison[unique[i]]) for i in rows_l.tolist()])
    verdict = _pair(zu, rows_l, rows_m, replace(cfg, collision_min_share=0.0, collision_reverse=1e9))
    assert verdict is not None
    share, reverse, _, post = verdict
    print(f"  first round {pair}: {len(rows_l)} distinct L rows ({int(is_poison.sum())} poison), {len(rows_m)} M rows; "
          f"share {share:.3f} reverse {reverse:.3f}")
    for name, mask in (("poison", is_poison), ("clean", ~is_poison)):
        if mask.any():
            q = torch.quantile(post[mask], torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])).tolist()
            above = int((post[mask] >= cfg.collision_posterior).sum())
            print(f"    posterior of {name}: quantiles 10/25/50/75/90 % " + " ".join(f"{v:.2f}" for v in q)
                  + f"; >= {cfg.collision_posterior}: {above}/{int(mask.sum())}")
    # who the k nearest are (among L and M) of the copies the posterior misses, and of L's own rows
    u = torch.cat([rows_l, rows_m])
    sim = zu[u] @ zu[u].T
    sim.fill_diagonal_(-2.0)
    kind = torch.cat([is_poison.long(), torch.full((len(rows_m),), 2)])  # 0 L's own, 1 copy, 2 M
    near = kind[sim[: len(rows_l)].topk(min(cfg.collision_neighbours, len(u) - 1), dim=1).indices]
    for name, mask in (("copies under posterior 0.5", is_poison & (post < 0.5)), ("L's own rows", ~is_poison)):
        if mask.any():
            mean = [float((near[mask] == j).float().sum(1).mean()) for j in range(3)]
            print(f"    nearest of the {int(mask.sum())} {name}: {mean[0]:.1f} of L's own, {mean[1]:.1f} copies, "
                  f"{mean[2]:.1f} of M")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", default="fmnist", choices=("fmnist", "clinc150"))
    parser.add_argument("--attack", default="targeted-sybil")
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="report", choices=("report", "tune"))
    parser.add_argument("--train", action="store_true", help="train the update on what the screens kept")
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="a ScreenConfig option on top of the tuned ones (repeatable)")
    parser.add_argument("--cache", default="/tmp/lifelong-poison-probe")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    make = fmnist_world if args.world == "fmnist" else clinc_world
    world = make(args.split, args.seed)
    report_world = make("report", args.seed) if args.split == "tune" else world
    base = Path(args.cache) / f"{args.world}-{args.seed}"
    if not base.exists():
        train_base(report_world, args.seed, base)
    world.base_dir = base
    report_world.base_dir = base
    saved = load_model(base)
    extra = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in args.set)}
    config = replace(ScreenConfig(), **{**load_tuning().get("screens", {}), **extra})
    seed = args.seed if args.split == "report" else 100 + args.seed
    attack = "targeted" if args.attack == "clean" else args.attack
    sc = make_scenario(world, attack, args.rate, seed, saved=saved)
    held, info = defend_screens(saved, sc, config)
    print(f"{args.world} {args.split} {args.attack} {args.rate} seed {args.seed}: {detection(held, sc.poison)}")
    print(f"  by screen: {info['by_screen']}")
    a, b = world.pair
    labels = list(sc.labels)
    ref_x, ref_labels = _reference(saved)
    trusted = [False] * len(labels) + [True] * len(ref_labels)
    names = labels + ref_labels
    # the input space as the screen builds it (images mapped by `collision_input`)
    z_in = unit_rows(input_features(torch.cat([sc.x, ref_x]), config.collision_input, config.seed))
    _pairs_report(z_in, names, trusted, sc.poison, config, None, "input")
    task = len(saved.spec.tasks) - 1
    feats = represent(saved.model, torch.cat([sc.x, ref_x]), task)[0]
    learned = {saved.spec.labels[c] for c in _learned(saved)}
    _pairs_report(unit_rows(feats), names, trusted, sc.poison, config, learned, "model")
    if args.attack != "clean":
        _posterior_of_poison(z_in, names, sc.poison, (world.labels[b], world.labels[a]), config)
    if args.train:
        assert report_world.test is not None
        world.test, world.triggered_test = report_world.test, report_world.triggered_test
        result = run_update(world, sc, held, seed, config)
        print(f"  update: new {result['new']:.3f} flip {result['flip_success']:.3f} "
              f"influence held {len(result['influence_held'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
