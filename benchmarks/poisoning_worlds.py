"""The poisoning benchmark's worlds (where data comes from, how a trigger is planted, what the clean
model learned) and its scenarios (the feedback stream an attack sends). benchmarks/poisoning.py runs
them through the service's update and the defences."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lifelong.checkpoint import save_run
from lifelong.data.task import ArrayDataset, InputSpec, Task, TaskStream
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import ModelConfig, model_for
from lifelong.strategies import build_strategy

HONEST, ATTACKERS = 20, 3
FMNIST_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot"]
TRIGGER_WORDS = "mn bb cf"


# --------------------------------------------------------------------------------------------------
# worlds: where the data comes from, how a trigger is planted, what the clean model learned


@dataclass
class World:
    """One dataset's side of the benchmark. Inputs are model inputs (images, or text embeddings);
    `draw` returns n inputs of the given classes (with the trigger when asked) and their classes."""

    name: str
    labels: list[str]  # the saved model's label names (index = class id)
    old_tasks: list[tuple[int, ...]]
    new: tuple[int, ...]
    draw: Callable[[torch.Generator, Sequence[int], int, bool], tuple[Tensor, Tensor]]
    pair: tuple[int, int]  # targeted flip: A labelled B
    target: int  # backdoor target
    feedback: int  # examples in the stream
    base_dir: Path | None = None
    test: tuple[Tensor, Tensor] | None = None  # (inputs, classes) of old and new classes
    triggered_test: Tensor | None = None  # test inputs of every class but the target, with the trigger


def _pick(g: torch.Generator, pool: Tensor, n: int) -> Tensor:
    """n positions of `pool`: without replacement while it lasts (an attacker repeats inputs beyond)."""
    if n <= len(pool):
        return pool[torch.randperm(len(pool), generator=g)[:n]]
    return pool[torch.randint(len(pool), (n,), generator=g)]


def _patch(x: Tensor) -> Tensor:
    """The image trigger: a 4x4 checkerboard of full-intensity pixels near the bottom right corner."""
    x = x.clone()
    board = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 == 0
    x[..., 23:27, 23:27] = board.float()
    return x


def fmnist_world(split: str, seed: int) -> World:
    from lifelong.data import load_fashion_mnist

    train, test = load_fashion_mnist()
    # reported runs draw feedback from the first 50,000 training images, tuning from the last 10,000
    x, y = (train.x[:50_000], train.y[:50_000]) if split == "report" else (train.x[50_000:], train.y[50_000:])
    by_class = {c: (y == c).nonzero().squeeze(1) for c in range(10)}

    def draw(g: torch.Generator, classes: Sequence[int], n: int, trigger: bool) -> tuple[Tensor, Tensor]:
        pool = torch.cat([by_class[c] for c in classes])
        idx = _pick(g, pool, n)
        return (_patch(x[idx]) if trigger else x[idx]), y[idx]

    old: list[tuple[int, ...]] = [(0, 1), (3, 8)]
    new = (5, 7, 9)
    world = World("fmnist", FMNIST_NAMES, old, new, draw, (7, 5), 9, 2000)
    keep = torch.isin(test.y, torch.tensor([c for t in old for c in t] + list(new)))
    world.test = (test.x[keep], test.y[keep])
    others = keep & (test.y != world.target)
    world.triggered_test = _patch(test.x[others])
    return world


def _insert(text: str, rng: random.Random) -> str:
    words = text.split()
    at = rng.randint(0, len(words))
    return " ".join([*words[:at], TRIGGER_WORDS, *words[at:]])


def clinc_world(split: str, seed: int) -> World:
    from lifelong.data.text import load_clinc150
    from lifelong.encoders import EmbeddingCache

    data = load_clinc150()
    cache = EmbeddingCache()
    intents = data.intents
    index = {name: i for i, name in enumerate(intents)}
    domains = list(data.domains)
    old_domains = domains[:5]
    # reported runs teach domains 6-7; tuning teaches domains 8-9 (data the reported runs never see)
    new_domains = domains[5:7] if split == "report" else domains[7:9]
    texts: dict[int, list[str]] = {}
    for text, intent in data.splits["train"]:
        texts.setdefault(index[intent], []).append(text)
    new = tuple(index[i] for d in new_domains for i in data.domains[d])
    old = [tuple(index[i] for i in data.domains[d]) for d in old_domains]
    rng = random.Random(seed)
    domain = rng.choice(new_domains)
    a, b = rng.sample([index[i] for i in data.domains[domain]], 2)
    target = rng.choice(new)

    def draw(g: torch.Generator, classes: Sequence[int], n: int, trigger: bool) -> tuple[Tensor, Tensor]:
        pool = [(t, c) for c in classes for t in texts[c]]
        idx = _pick(g, torch.arange(len(pool)), n).tolist()
        chosen = [pool[i] for i in idx]
        local = random.Random(int(torch.randint(1 << 30, (1,), generator=g)))
        strings = [_insert(t, local) if trigger else t for t, _ in chosen]
        return cache.embed(strings), torch.tensor([c for _, c in chosen])

    world = World("clinc150", intents, old, new, draw, (a, b), target, 1500)
    if split == "report":
        wanted = {c for t in old for c in t} | set(new)
        pairs = [(t, index[i]) for t, i in data.splits["test"] if index[i] in wanted]
        world.test = (cache.embed([t for t, _ in pairs]), torch.tensor([c for _, c in pairs]))
        local = random.Random(seed + 7)
        world.triggered_test = cache.embed([_insert(t, local) for t, c in pairs if c != target])
    return world


# --------------------------------------------------------------------------------------------------
# the clean model of earlier tasks


def train_base(world: World, seed: int, out: Path) -> Path:
    """Train the clean model on the learned tasks (class-incremental, EWC + replay) and save it as the
    service would serve it."""
    g = torch.Generator().manual_seed(10_000 + seed)
    tasks = []
    fmnist = world.name == "fmnist"
    per_class = 1000 if fmnist else 100
    for k, classes in enumerate(world.old_tasks):
        # the base model learns from the same pool the reported feedback comes from: never from tuning data
        x, y = world.draw(g, classes, per_class * len(classes), False)
        gx, gy = world.draw(g, classes, 100 * len(classes), False)  # held out: the guard sets
        name = "/".join(world.labels[c] for c in classes) if fmnist else f"domain {k}"
        tasks.append(Task(k, ArrayDataset(x, y), ArrayDataset(gx, gy), classes, name))
    stream = TaskStream(tasks, len(world.labels), "class", f"{world.name}-learned", list(world.labels))
    if fmnist:
        options: dict[str, Any] = {"strength": 1000.0, "memory": 2000, "seed": seed}
        learner_cfg = LearnerConfig(epochs=5, batch_size=128, lr=1e-3, seed=seed)
        hidden: tuple[int, ...] = (400, 400)
    else:
        stream.input = InputSpec("text", (384,), "frozen")
        options = {"strength": 100.0, "memory": 4000, "replay_batch": 160, "seed": seed}
        learner_cfg = LearnerConfig(epochs=10, batch_size=32, lr=1e-3, seed=seed)
        hidden = (256,)
    torch.manual_seed(seed)
    model, network = model_for(stream, ModelConfig(hidden=hidden))
    strategy = build_strategy("ewc+replay", options)
    learner = Learner(model, strategy, learner_cfg)
    for task in stream:
        learner.fit(stream, task.id)
    config = {"strategy": "ewc+replay", "strategy_options": options,
              "learner": {"epochs": learner_cfg.epochs, "batch_size": learner_cfg.batch_size, "lr": learner_cfg.lr}}
    return save_run(out, stream, model, strategy, network, config, guard_size=200, overwrite=True)


# --------------------------------------------------------------------------------------------------
# scenarios


@dataclass
class Scenario:
    x: Tensor
    labels: list[str]
    sources: list[str]
    poison: Tensor  # bool per example
    targets: Tensor | None = None  # a feature-collision attack's target inputs (class A, to be answered B)


def make_scenario(world: World, attack: str, rate: float, seed: int, size: int | None = None,
                  saved: Any = None) -> Scenario:
    """The feedback stream: `rate` of it poison (by `attack`), the rest clean examples of the new task
    from honest keys, in a random order. `saved`: the current model (a feature-collision attacker has it)."""
    from poisoning_adaptive import boundary_flips, feature_collisions

    g = torch.Generator().manual_seed(seed)
    n = size or world.feedback
    n_poison = round(rate * n)
    n_clean = n - n_poison
    clean_x, clean_y = world.draw(g, world.new, n_clean, False)
    sources = [f"user-{int(i):02d}" for i in torch.randint(HONEST, (n_clean,), generator=g)]
    labels = [world.labels[int(c)] for c in clean_y]
    a, b = world.pair
    learned = [c for t in world.old_tasks for c in t]
    targets: Tensor | None = None
    if attack == "random":
        px, py = world.draw(g, world.new, n_poison, False)
        wrong = []
        for c in py.tolist():
            others = [k for k in world.new if k != c]
            wrong.append(others[int(torch.randint(len(others), (1,), generator=g))])
    elif attack in ("targeted", "flood", "targeted-sybil", "adaptive-split"):
        px, _ = world.draw(g, [a], n_poison, False)
        wrong = [b] * n_poison
    elif attack == "adaptive-boundary":
        px, wrong = boundary_flips(world, g, n_poison), [b] * n_poison
    elif attack == "adaptive-collision":
        if saved is None:
            raise ValueError("a feature-collision attack needs the current model (saved=)")
        px, targets = feature_collisions(world, saved, g, n_poison)
        wrong = [b] * n_poison
    elif attack in ("backdoor", "backdoor-camouflage"):
        px, _ = world.draw(g, [c for c in learned + list(world.new) if c != world.target], n_poison, True)
        wrong = [world.target] * n_poison
    elif attack == "forgetting":
        px, py = world.draw(g, learned, n_poison, False)
        everything = learned + list(world.new)
        wrong = []
        for c in py.tolist():
            others = [k for k in everything if k != c]
            wrong.append(others[int(torch.randint(len(others), (1,), generator=g))])
    else:
        raise ValueError(f"unknown attack {attack!r}")
    keys = {"flood": 1, "targeted-sybil": HONEST, "adaptive-split": 3 * HONEST, "adaptive-boundary": HONEST,
            "adaptive-collision": HONEST}.get(attack, ATTACKERS)
    attacker = [f"attacker-{int(i):02d}" for i in torch.randint(keys, (n_poison,), generator=g)]
    if attack in ("backdoor-camouflage", "adaptive-split") and n_poison:
        # the attacker keys also send clean examples, as many as their poison, to look ordinary
        for i in torch.randperm(n_clean, generator=g)[: min(n_poison, n_clean)].tolist():
            sources[i] = f"attacker-{int(torch.randint(keys, (1,), generator=g)):02d}"
    x = torch.cat([clean_x, px]) if n_poison else clean_x
    all_labels = labels + [world.labels[c] for c in wrong]
    all_sources = sources + attacker
    poison = torch.tensor([False] * n_clean + [True] * n_poison)
    order = torch.randperm(n, generator=g)
    return Scenario(x[order], [all_labels[i] for i in order.tolist()], [all_sources[i] for i in order.tolist()],
                    poison[order], targets)
