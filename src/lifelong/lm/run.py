"""One continual language-modelling run: pre-train on the general mixture (or load that model from
the cache), then learn the stream's tasks one after another through a strategy, scoring every task
after each.

- ``text-domains``: Python source, Python documentation, WordNet glosses, CLINC150 queries in turn;
  matrices of next-byte accuracy and loss; the general mixture's loss before and after.
- ``facts``: batches of new generated facts; exact match on each batch's held-out questions.

Row i of a matrix is measured after training task i (row 0: after pre-training); the metrics of the
domains (or fact batches) use rows and columns 1..T-1, the general mixture (column 0) is reported
apart. Pre-training does not depend on the strategy or the run's seed (`pretrain_seed`), so it runs
once per model size and is cached (`cache_dir`); the strategy then sees the general mixture through
`after_task(model, 0, ...)` (EWC's Fisher of it, replay's share of it, the distillation teacher).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from lifelong.atomic import torch_save
from lifelong.data.facts import HELD_OUT_FORMS, FactsConfig, asked_forms
from lifelong.data.lm import DOMAINS, LMDataConfig, facts_stream, general_task, text_domains_stream
from lifelong.data.task import BatchLoader, Task, TaskData, TaskStream
from lifelong.devices import check_name
from lifelong.evaluation import summary
from lifelong.learner import LearnerConfig
from lifelong.lm.learner import LMLearner
from lifelong.lm.lora import GPTLoRAConfig, add_lora
from lifelong.models.gpt import GPT, gpt_config
from lifelong.strategies import Naive, build_strategy
from lifelong.strategies.base import state_nbytes

BENCHMARKS = ("text-domains", "facts")


@dataclass
class LMRunConfig:
    benchmark: str = "text-domains"
    model: str = "gpt-1m"  # a preset of lifelong.models.gpt.PRESETS
    strategy: str = "naive"
    options: dict[str, Any] = field(default_factory=dict)
    data: LMDataConfig = field(default_factory=LMDataConfig)
    domains: tuple[str, ...] = DOMAINS
    lr: float = 1e-3  # Adam, a fresh optimizer per task, as the library's other benchmarks
    # "adam-compiled": the same Adam as one compiled pass per tensor, consolidation's penalty folded in
    optimizer: str = "adam"
    pretrain_lr: float = 1e-3  # pre-training's own, so that a continual phase's lr keeps the same pre-trained model
    importance_batch: int = 16  # sequences per batch of the importance pass
    eval_split: str = "test"  # "valid" for tuning
    seed: int = 0  # the continual phase: data order, replay draws, the model's init without pre-training
    pretrain_seed: int = 0  # the pre-trained model (shared by every run of a size)
    cache_dir: str | None = None  # pre-trained models are kept here
    device: str = "cpu"  # where the model trains ("cuda", "auto", ...): not part of what a run is
    # > 0: after pre-training the GPT is frozen and LoRA adapters of this rank (alpha = 2 * rank) on its
    # attention and MLP Linear layers train instead (lifelong.lm.lora); 0: every parameter trains
    lora_rank: int = 0

    def __post_init__(self) -> None:
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {self.benchmark!r}; choose one of {BENCHMARKS}")
        if self.eval_split not in ("test", "valid"):
            raise ValueError(f"eval_split must be 'test' or 'valid', not {self.eval_split!r}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0 (0: no adapters), not {self.lora_rank}")
        if self.optimizer not in ("adam", "adam-compiled"):
            raise ValueError(f"optimizer must be 'adam' or 'adam-compiled', not {self.optimizer!r}")
        if self.lr <= 0 or self.pretrain_lr <= 0 or self.importance_batch < 1:
            raise ValueError("lr and pretrain_lr must be > 0 and importance_batch >= 1")
        gpt_config(self.model)  # a clear error for an unknown size
        check_name(self.device)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "data": self.data.to_dict()}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> LMRunConfig:
        """The configuration `to_dict` wrote (a saved run's), also one saved before later fields existed."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in saved.items() if k in known and k != "data" and v is not None}
        data = dict(saved["data"])
        facts = FactsConfig(**data.pop("facts", {}))
        if "domains" in values:
            values["domains"] = tuple(values["domains"])
        return cls(**values, data=LMDataConfig(**data, facts=facts))


def train_windows(config: LMRunConfig) -> list[int]:
    """The training windows of each task the run's strategy meets: the general mixture first where the
    model is pre-trained (`pretrain_steps * batch_size`), then every domain or fact batch (`steps *
    batch_size` each). A token-replay budget of `keep_all_budget(train_windows(c), c.data.length + 1)`
    keeps them all."""
    d = config.data
    later = d.facts.batches if config.benchmark == "facts" else len(config.domains)
    return [d.pretrain_steps * d.batch_size] * (d.pretrain_steps > 0) + [d.steps * d.batch_size] * later


def build_stream(config: LMRunConfig) -> TaskStream:
    data = replace(config.data, seed=config.seed)
    if config.benchmark == "facts":
        return facts_stream(data, domains=config.domains, split=config.eval_split)
    return text_domains_stream(data, config.domains)


def _pretrain_key(config: LMRunConfig) -> str:
    # the stream's fact batches are drawn after the background facts, so they do not change pre-training
    d = replace(config.data, facts=replace(config.data.facts, batches=10, entities_per_batch=8, valid_facts=False))
    what = {"model": asdict(gpt_config(config.model, block_size=d.length)), "lr": config.pretrain_lr,
            "seed": config.pretrain_seed, "domains": list(config.domains),
            "data": {k: v for k, v in d.to_dict().items() if k not in ("steps", "seed", "eval_windows")}}
    return hashlib.blake2b(json.dumps(what, sort_keys=True).encode(), digest_size=8).hexdigest()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the model's weights: two runs with one fingerprint started from the same model. A
    pre-training redone elsewhere (another thread count or device sums in another order) gives another one."""
    h = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def pretrain_cache_path(config: LMRunConfig) -> Path | None:
    """Where the pre-trained model of `config` is cached (None without a cache or pre-training)."""
    if not config.cache_dir or not config.data.pretrain_steps:
        return None
    return Path(config.cache_dir) / f"pretrain-{config.model}-{_pretrain_key(config)}.pt"


def _load_cached(model: GPT, path: Path) -> dict[str, Any]:
    """Load the cached pre-trained weights at `path` into `model`; returns the whole cache entry."""
    saved = torch.load(path, weights_only=True, map_location="cpu")
    model.load_state_dict(saved["model"])
    return saved


def cached_start(config: LMRunConfig) -> str | None:
    """The fingerprint of the pre-trained model a run of `config` would start from on this machine, where the
    cache holds it; None where the run would pre-train first (its weights are not known before)."""
    path = pretrain_cache_path(config)
    if path is None or not path.exists():
        return None
    model = GPT(gpt_config(config.model, block_size=config.data.length))
    _load_cached(model, path)
    return weights_fingerprint(model)


def pretrained_model(config: LMRunConfig, log: Callable[[str], None] = lambda _: None) -> tuple[GPT, dict[str, Any]]:
    """The GPT after pre-training on the general mixture (from the cache when it is there). Its info names
    the weights (`weights`, a fingerprint) and how they were made (`threads`, `device`; runs that pre-trained
    before these were recorded lack them)."""
    d = config.data
    model_config = gpt_config(config.model, block_size=d.length)
    torch.manual_seed(config.pretrain_seed if d.pretrain_steps else config.seed)
    model = GPT(model_config)
    info: dict[str, Any] = {"steps": d.pretrain_steps, "seconds": 0.0, "cached": False}
    if d.pretrain_steps == 0:
        return model, info
    path = pretrain_cache_path(config)
    if path is None:
        return _pretrain(config, model, info, log)
    path.parent.mkdir(parents=True, exist_ok=True)
    # runs started together (`--jobs`) on a cold cache: one pre-trains, the others wait and load its model
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process pre-training {config.model} ({path.name})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            return _pretrain(config, model, info, log, path)
    saved = _load_cached(model, path)
    made: dict[str, Any] = {k: saved[k] for k in ("threads", "device") if k in saved}
    return model, {**info, "seconds": float(saved["seconds"]), "cached": True, "path": str(path), **made,
                   "weights": weights_fingerprint(model)}


def _pretrain(config: LMRunConfig, model: GPT, info: dict[str, Any], log: Callable[[str], None],
              path: Path | None = None) -> tuple[GPT, dict[str, Any]]:
    """Pre-train `model` on the general mixture; cache it at `path` when given."""
    d = config.data
    general = general_task(replace(d, seed=config.pretrain_seed), torch.Generator().manual_seed(config.pretrain_seed),
                           config.domains)
    learner = LMLearner(model, Naive(), LearnerConfig(batch_size=d.batch_size, lr=config.pretrain_lr, optimizer="adam",
                                                       seed=config.pretrain_seed, device=config.device))
    log(f"pre-training {config.model} ({model.config.num_parameters:,} parameters) for {d.pretrain_steps} steps")
    stats = learner.fit(TaskStream([general], 256, "domain"), 0)
    info.update(seconds=stats["train_seconds"], threads=torch.get_num_threads(), device=str(learner.device))
    if path is not None:
        # written whole or not at all: parallel runs of one size may share the cache
        torch_save(path, {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                          **{k: info[k] for k in ("seconds", "threads", "device")}})
        info["path"] = str(path)
    return model, {**info, "weights": weights_fingerprint(model)}


def _metrics(stream: TaskStream, scores: list[list[dict[str, float]]], pretrained: bool) -> dict[str, float]:
    """Domain metrics over rows/columns 1..T-1 and the general mixture's numbers from column 0."""
    key = "exact_match" if stream[1].evaluator is not None else "accuracy"
    t = len(stream)
    acc = [[scores[i][j].get(key, math.nan) for j in range(1, t)] for i in range(1, t)]
    out = summary(acc)
    out.pop("fwt", None)
    if key == "accuracy":
        loss = [[scores[i][j]["loss"] for j in range(1, t)] for i in range(1, t)]
        out["loss_rise"] = float(sum(loss[-1][j] - loss[j][j] for j in range(t - 2)) / max(t - 2, 1))
        out["final_loss"] = float(sum(loss[-1]) / len(loss[-1]))
    g0, g1 = scores[0][0], scores[-1][0]
    out.update({"general_loss_before": g0["loss"], "general_loss_after": g1["loss"],
                "general_loss_ratio": g1["loss"] / g0["loss"], "general_accuracy_before": g0["accuracy"],
                "general_accuracy_after": g1["accuracy"], "pretrained": float(pretrained)})
    return out


def meet_general_mixture(learner: LMLearner, stream: TaskStream, config: LMRunConfig) -> None:
    """The strategy's task 0 after pre-training: the general mixture through `before_task` and `after_task`
    (EWC's Fisher of it, replay's share of it, the distillation teacher), without training on it."""
    learner.strategy.before_task(learner.model, 0)
    learner.strategy.after_task(learner.model, 0, BatchLoader(
        [TaskData(stream[0].train, 0)], config.importance_batch, shuffle=True,
        generator=torch.Generator().manual_seed(config.seed), device=learner.device))


def run_lm(config: LMRunConfig, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run one strategy through one stream; returns matrices, metrics, stored bytes and timings."""
    start, cpu = time.perf_counter(), time.process_time()
    stream = build_stream(config)
    model, pretrain = pretrained_model(config, log)
    pretrained = config.data.pretrain_steps > 0
    if config.lora_rank:  # the adapters' A from the run's seed (B = 0: the pre-trained outputs unchanged)
        add_lora(model, GPTLoRAConfig(rank=config.lora_rank, alpha=2 * config.lora_rank), config.seed)  # in place
    strategy = build_strategy(config.strategy, {**config.options, "seed": config.seed})
    d = config.data
    learner = LMLearner(model, strategy, LearnerConfig(batch_size=d.batch_size, lr=config.lr,
                                                       optimizer=config.optimizer, seed=config.seed,
                                                       importance_batch=config.importance_batch, device=config.device))
    facts = stream[1].evaluator is not None

    def fact_scores(task: Task) -> dict[str, float]:
        """The split's exact match, and beside it two diagnoses: the question form trained on, and each
        held-out form alone. Each form is asked once: the split's score is the mean over its forms (each
        form asks one question a fact, so this is the share of the split's questions answered)."""
        forms = [learner.score_task(task, f"held-out-{k}")["exact_match"] for k in range(HELD_OUT_FORMS)]
        asked = asked_forms(config.data.facts, config.eval_split)
        return {"exact_match": sum(forms[k] for k in asked) / len(asked),
                "taught_match": learner.score_task(task, "taught")["exact_match"],
                **{f"held_out_{k}_match": m for k, m in enumerate(forms)}}

    def scores_after(i: int) -> list[dict[str, float]]:  # fact batches not yet learned are not asked
        return [{} if facts and task.id > i else
                fact_scores(task) if task.evaluator is not None else learner.score_task(task, config.eval_split)
                for task in stream]

    scores = [scores_after(0)]
    tasks: list[dict[str, Any]] = []
    if pretrained:  # the strategy meets the general mixture as its task 0
        t0 = time.perf_counter()
        meet_general_mixture(learner, stream, config)
        tasks.append({"task": 0, "after_task_seconds": time.perf_counter() - t0,
                      "stored_bytes": state_nbytes(strategy.state_dict())})
    for t in range(1, len(stream)):
        stats = learner.fit(stream, t)
        stats["stored_bytes"] = state_nbytes(strategy.state_dict())
        tasks.append(stats)
        scores.append(scores_after(t))
        row = scores[-1][t]
        log(f"{config.model} {config.strategy} seed {config.seed}: task {t} ({stream[t].name}) "
            f"{', '.join(f'{k} {v:.3f}' for k, v in row.items())}; general loss {scores[-1][0]['loss']:.3f}")
    metrics = _metrics(stream, scores, pretrained)
    return {"config": config.to_dict(), "tasks": [task.name for task in stream],
            "parameters": sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n),  # the GPT's
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "scores": scores, "metrics": metrics,
            "stored_bytes": max((s["stored_bytes"] for s in tasks), default=0), "task_stats": tasks,
            "pretrain": pretrain, "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu}  # on a shared machine, the wall seconds carry the load
