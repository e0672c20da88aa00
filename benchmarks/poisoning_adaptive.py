"""Attackers who know the screens (benchmarks/poisoning.py's adaptive rows).

- adaptive-split: the targeted flip (class A's inputs labelled B) split over three times as many keys
  as there are honest ones, each key also sending as many clean examples as poisoned ones: every key
  stays far under the per-key share cap, and no key's examples look more suspicious than an honest
  key's by much (the per-key screens' blind spot).
- adaptive-boundary: the targeted flip with only the A inputs that look most like B (by a surrogate
  the attacker fits on its own draws of A and B: the nearest-centroid score in input space), from as
  many keys as the honest ones: the flipped examples then sit at B's edge instead of copying A's whole
  distribution, which is what the label-collision screen looks for.
- adaptive-collision: clean-label feature collisions (Shafahi et al. 2018, "Poison frogs!"): inputs
  that look like B and are honestly labelled B, but whose features in the current model (the
  attacker has it) sit on a few target A inputs, so that training on them pulls the targets to B.
  On images the poison is optimised in pixel space from a watermarked B image (0.7 B + 0.3 target);
  on text, where the attacker must send real sentences, it is the real B sentences whose features lie
  nearest each target (a selection, not an optimisation: weaker, and said so). Success is the share
  of the target inputs answered B.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

TARGETS = 5  # target inputs of a feature-collision attack


def boundary_flips(world: Any, g: torch.Generator, n: int) -> Tensor:
    """n inputs of class A: the fifth of the attacker's own draws of A (distinct inputs) that a
    nearest-centroid surrogate, fitted on those draws and on draws of B, finds most like B (repeated
    when that is fewer than n, as on CLINC150's 100 sentences per intent)."""
    a, b = world.pair
    pool, _ = world.draw(g, [a], max(5 * n, 500), False)
    other, _ = world.draw(g, [b], 500, False)
    distinct = torch.unique(pool.flatten(1).float(), dim=0)
    score = (torch.cdist(distinct, distinct.mean(0, keepdim=True))[:, 0]
             - torch.cdist(distinct, other.flatten(1).float().mean(0, keepdim=True))[:, 0])  # larger: more like B
    keep = distinct[score.argsort(descending=True)[: max(1, len(distinct) // 5)]]
    picks = torch.randint(len(keep), (n,), generator=g) if len(keep) < n else torch.arange(n)
    return keep[picks].reshape(n, *pool.shape[1:])


@torch.no_grad()
def _features(model: Any, x: Tensor, task: int) -> Tensor:
    model.eval()
    return model.features(x, torch.full((len(x),), task, dtype=torch.long))


def feature_collisions(world: Any, saved: Any, g: torch.Generator, n: int) -> tuple[Tensor, Tensor]:
    """(poison inputs labelled B, the target A test inputs): `n` poison split evenly over TARGETS
    targets drawn from the test set's A inputs."""
    assert world.test is not None
    a, b = world.pair
    test_x, test_y = world.test
    rows = (test_y == a).nonzero().squeeze(1)
    targets = test_x[rows[torch.randperm(len(rows), generator=g)[:TARGETS]]]
    task = len(saved.spec.tasks) - 1
    model = saved.model
    goal = _features(model, targets, task)  # [T, d]
    per = [n // TARGETS + (1 if t < n % TARGETS else 0) for t in range(TARGETS)]
    base, _ = world.draw(g, [b], max(n, 500) if world.name == "clinc150" else n, False)
    if world.name == "clinc150":  # real sentences only: the B sentences nearest each target in the model
        feats = _features(model, base, task)
        chosen = []
        for t, k in enumerate(per):
            order = torch.cdist(goal[t: t + 1], feats)[0].argsort()
            uniq, seen = [], set()
            for i in order.tolist():  # distinct sentences (the pool repeats them)
                key = tuple(base[i, :8].tolist())
                if key not in seen:
                    seen.add(key)
                    uniq.append(i)
                if len(uniq) == max(1, k // 3):
                    break
            chosen += [uniq[j % len(uniq)] for j in range(k)]
        return base[torch.tensor(chosen)], targets
    # images: optimise each poison's pixels from a watermarked base towards its target's features,
    # staying close to the base (Shafahi et al.'s objective, Adam in place of their forward-backward steps)
    target_of = torch.cat([torch.full((k,), t, dtype=torch.long) for t, k in enumerate(per)])
    start = 0.7 * base + 0.3 * targets[target_of]
    x = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.01)
    beta = 0.1 * goal.shape[1] / start[0].numel()
    with torch.enable_grad():
        for _ in range(200):
            opt.zero_grad()
            f = model.features(x, torch.full((len(x),), task, dtype=torch.long))
            loss = ((f - goal[target_of]) ** 2).sum(1).mean() + beta * ((x - start) ** 2).flatten(1).sum(1).mean()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
    return x.detach(), targets
