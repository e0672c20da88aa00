"""What each method adds to a GPT's training step, side by side on one machine: replay alone, a teacher
(distillation) on top of it, EWC on top of it, or any of benchmarks/lm.py's methods.

    OMP_NUM_THREADS=1 python benchmarks/lm_cost.py methods --size gpt-16m --steps 25 \\
        --methods replay,distill+replay,ewc+replay --set replay=2.5 --set replay_batch=48

A whole run's seconds also hold evaluation, the importance pass and the load of whatever else ran on the
machine at the time, and runs compared across sessions ran on different hosts. Here every method gets its
own copy of one randomly initialised GPT (a step's time does not depend on the weights) and meets the
setting's data as a run does: the general mixture through `after_task(model, 0, ...)` (replay's store,
the teacher, EWC's Fisher of it), then the first domain's batches through the Learner's own `start_task`
and `train_step` (every hook). The methods take their steps in turn, so that the machine's load hits them
alike; one step each first, not timed, allocates the optimizer's state. Options are each method's as
benchmarks/lm.py would run it (validation's choices, then `--set`, each option given to the methods that
take it: `--set weight=0.1` sets the teacher's weight and leaves replay alone as it is).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from lm_methods import METHODS, _options
from lm_plan import run_config

from lifelong.learner import LearnerConfig
from lifelong.lm.learner import LMLearner
from lifelong.lm.run import build_stream, meet_general_mixture
from lifelong.models.gpt import GPT, gpt_config
from lifelong.strategies import build_strategy, option_names

RUN_OPTIONS = ("replay", "lora", "lr", "optimizer")  # the run's, not the strategy's (lm_plan.run_config)


def method_steps(size: str, methods: list[str], extra: dict[str, Any], steps: int,
                 setting: str = "domains") -> dict[str, Any]:
    """Training steps of a GPT of `size` under each of `methods` (benchmarks/lm.py's names), in turn."""
    if len(set(methods)) < 2 or len(set(methods)) != len(methods) or steps < 1:
        raise ValueError(f"methods needs at least two different methods and one step, not {methods} and {steps}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; benchmarks/lm.py has {sorted(METHODS)}")
    args = argparse.Namespace(setting=setting, split="test", device="cpu")
    torch.manual_seed(0)
    start: dict[str, torch.Tensor] | None = None
    stream = None
    sides: dict[str, tuple[LMLearner, Any]] = {}
    options: dict[str, dict[str, Any]] = {}
    for method in methods:
        takes = option_names(METHODS[method][0])
        own = {k: v for k, v in extra.items() if k in takes or k in RUN_OPTIONS}  # `weight` is not replay's
        strategy_name, method_options = _options(setting, size, method, own)
        config = run_config(args, size, strategy_name, method_options, seed=0)
        stream = stream or build_stream(config)  # the same for every method: the data do not depend on it
        model = GPT(gpt_config(size, block_size=config.data.length))
        if start is None:
            start = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(start)
        strategy = build_strategy(strategy_name, {**config.options, "seed": 0})
        learner = LMLearner(model, strategy, LearnerConfig(batch_size=config.data.batch_size, lr=config.lr,
                                                           optimizer=config.optimizer, seed=0,
                                                           importance_batch=config.importance_batch))
        if config.data.pretrain_steps:  # as run_lm: the general mixture is then the strategy's task 0
            meet_general_mixture(learner, stream, config)
        loader = learner.start_task(stream, 1)
        if len(loader) <= steps:
            raise ValueError(f"the first task has {len(loader)} batches: at most {len(loader) - 1} steps")
        batches = iter(loader)
        learner.train_step(next(batches))  # not timed: the optimizer's state is allocated here
        sides[method] = (learner, batches)
        options[method] = {"strategy": strategy_name, "options": config.options, "optimizer": config.optimizer}
    seconds: dict[str, list[float]] = {m: [] for m in sides}
    for _ in range(steps):
        for method, (learner, batches) in sides.items():
            batch = next(batches)
            t = time.perf_counter()
            learner.train_step(batch)
            seconds[method].append(time.perf_counter() - t)
    first = methods[0]
    median = {m: float(torch.tensor(s).median()) for m, s in seconds.items()}
    return {"size": size, "parameters": sum(p.numel() for p in sides[first][0].model.parameters()),
            "setting": setting, "set": extra, "methods": options, "steps": steps, "step_seconds": seconds,
            "ratio_fastest": {m: min(s) / min(seconds[first]) for m, s in seconds.items()},
            "ratio_median": {m: median[m] / median[first] for m in seconds},
            "threads": torch.get_num_threads()}
