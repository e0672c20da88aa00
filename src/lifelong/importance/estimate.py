"""How much each parameter matters: diagonal Fisher information (EWC) and output sensitivity (MAS).

Both are means over samples of a per-sample quantity, (d loss_n / d theta)^2 for the Fisher and
|d ||f(x_n)||^2 / d theta| for MAS, so they need per-sample gradients, not the gradient of a
mini-batch mean (squaring a mean is about 1/B of the mean of squares). Three exact ways:

- ``loop``: one backward pass per sample; the obvious reference.
- ``vmap``: ``torch.func.vmap(grad(...))`` of the whole model over chunks of samples; any model.
- ``auto`` (the default): one batched forward and backward pass, then, per module, the fastest
  exact rule for its type (rules.py: closed forms for Linear, Conv2d, Embedding and LayerNorm, a
  module-local vmap for anything else). It falls back to ``vmap`` for models where a module runs
  twice in one forward pass (shared weights) or returns more than one tensor.

All three agree within float error (tests/test_importance.py). The model must treat samples
independently (no batch statistics: estimation runs in eval mode).

Which Fisher (`fisher=`): ``empirical`` squares the gradient at the data's labels; ``true`` at one
label drawn from the model per sample (a one-sample estimate of the expectation); ``exact`` takes
the expectation over the classes, sum_c p_c (d log p_c / d theta)^2, as C backward passes of
sum_n sqrt(p_nc) * CE(logits_n, c) with p detached, so every per-sample square is exact (van de Ven
2025, "On the computation of the Fisher information in continual learning", finds it best);
``batched`` is the common shortcut of squaring each mini-batch's mean gradient (Avalanche's EWC),
about 1/B of the others and not a per-sample quantity (see `fisher_diagonal`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap
from torch.utils._pytree import tree_map

from lifelong.data.task import Batch
from lifelong.distributed import all_reduce_sum_
from lifelong.importance import rules
from lifelong.importance.capture import forward_with_calls
from lifelong.models.heads import ContinualClassifier

Importance = dict[str, Tensor]
METHODS = ("auto", "vmap", "loop")
FISHERS = ("empirical", "true", "exact", "batched")
# batches whose `auto` estimate fell back from the per-module rules to the whole model, by the way taken
# ("vmap", or "loop" where vmap could not trace the model), in this process (see `fallbacks`)
WHOLE_MODEL_FALLBACKS: Counter[str] = Counter()


def fallbacks(model: nn.Module) -> dict[str, Any]:
    """What the fast (`auto`) importance cannot do with a closed form, for a run's output: the layers
    that take the module-local vmap (`rules.generic`: no closed form for their type), and the batches
    that fell back to the whole model so far (a module run twice, returning a tuple, or broadcast)."""
    layers = [f"{name or '(model)'} ({rules.module_type(m).__name__})" for name, m in _owners(model)
              if rules.rule_for(m) is rules.generic]
    return {"generic_layers": layers, "whole_model_batches": dict(WHOLE_MODEL_FALLBACKS)}


def as_batch(batch: Any) -> Batch:
    """Accept a `Batch`, or an (x, y) / (x, y, task) tuple from a user's DataLoader."""
    if isinstance(batch, Batch):
        return batch
    x, y, *rest = batch
    task = rest[0] if rest else torch.zeros(len(y), dtype=torch.long, device=y.device)
    return Batch(x, y, task)


def _call(model: nn.Module, x: Any, task: Tensor) -> Tensor:
    # Models that take a task id (ContinualClassifier) get it; plain networks do not.
    return model(x, task) if isinstance(model, ContinualClassifier) else model(x)


IGNORE_INDEX = -100  # a target that counts in no loss (padding in a sequence)


def _log_likelihood_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Summed cross-entropy of logits [..., C] against labels [...]: one label per sample ([N, C]
    against [N]) or one per position (next-token logits [N, L, V] against [N, L]). Summing over a
    sample's positions makes its gradient the gradient of the sequence's log-likelihood, whose
    square is that sample's Fisher term."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum",
                           ignore_index=IGNORE_INDEX)


def _class_weights(logits: Tensor) -> Tensor:
    """sqrt(p) of the model's own prediction, detached: weighting class c's loss by it makes the square of
    the per-sample gradient p_c (d log p_c)^2, the class's share of the exact Fisher. Masked classes: 0."""
    return torch.softmax(logits.detach(), dim=-1).sqrt()


def _exact_terms(logits: Tensor) -> Tensor:
    """[C] the per-class weighted losses sum_n sqrt(p_nc) * -log p_nc (vmappable: no data-dependent
    choice of classes; classes with p = 0 give 0 and no NaN)."""
    logp = torch.log_softmax(logits, dim=-1)
    w = _class_weights(logits)
    return -(w * torch.where(w > 0, logp, 0.0)).sum(0)


def _objective(kind: str) -> Callable[[Tensor, Tensor], list[Tensor]]:
    """Per-batch objective(s), each a sum of per-sample terms; the squares (or absolute values) of
    each term's per-sample gradient, summed over the objectives, are what the estimator averages."""
    if kind == "fisher":
        return lambda logits, y: [_log_likelihood_loss(logits, y)]
    if kind == "exact":
        def per_class(logits: Tensor, y: Tensor) -> list[Tensor]:
            _one_label_per_sample(logits)
            terms = _exact_terms(logits)
            live = logits.detach().softmax(-1).amax(0) > 0
            return [terms[c] for c in live.nonzero().flatten().tolist()]  # only classes the model can predict
        return per_class

    def squared_output_norm(logits: Tensor, y: Tensor) -> list[Tensor]:  # MAS needs no labels
        return [torch.where(torch.isfinite(logits), logits, 0.0).pow(2).sum()]

    return squared_output_norm


def _one_label_per_sample(logits: Tensor) -> None:
    if logits.dim() > 2:  # a sequence's exact Fisher needs one pass per class at every position
        raise ValueError("fisher='exact' takes one label per sample ([N, C] logits); for sequences "
                         f"(logits {tuple(logits.shape)}) use 'empirical' or 'true'")


def _sample_objective(kind: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The same objectives for one sample, stacked into a 1-D tensor (what `jacrev` under vmap takes)."""
    if kind == "exact":
        def terms(logits: Tensor, y: Tensor) -> Tensor:
            _one_label_per_sample(logits)
            return _exact_terms(logits)
        return terms
    whole = _objective(kind)
    return lambda logits, y: whole(logits, y)[0].reshape(1)


def _take(x: Any, index: Any) -> Any:
    """Index a batch of inputs: a tensor, or a dict of tensors (tokenised text)."""
    return tree_map(lambda v: v[index], x)


@torch.no_grad()
def collect_inputs(model: nn.Module, modules: dict[str, nn.Module], batches: Iterable[Any],
                   max_samples: int | None, transform: Callable[[str, nn.Module, Tensor], Tensor]
                   ) -> dict[str, list[Tensor]]:
    """What each of `modules` (by name) receives as its first input over up to `max_samples` samples of
    `batches`, in eval mode (no dropout), each call's input passed through `transform(name, module, x)`."""
    seen: dict[str, list[Tensor]] = {n: [] for n in modules}

    def keep(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            seen[name].append(transform(name, module, args[0]))
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        for b in _limited(batches, max_samples):
            _call(model, b.x, b.task)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return seen


def _limited(batches: Iterable[Any], max_samples: int | None) -> Iterator[Batch]:
    seen = 0
    for raw in batches:
        b = as_batch(raw)
        if max_samples is not None:
            room = max_samples - seen
            if room <= 0:
                return
            if len(b.y) > room:
                b = Batch(_take(b.x, slice(0, room)), b.y[:room], b.task[:room])
        seen += len(b.y)
        yield b


def _sampled_labels(model: nn.Module, b: Batch, generator: torch.Generator | None) -> Tensor:
    """Labels drawn from the model's own prediction: the 'true' Fisher instead of the empirical."""
    with torch.no_grad():
        probs = torch.softmax(_call(model, b.x, b.task), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    if generator is not None and generator.device != flat.device:  # a CPU generator: the same draws on any device
        flat = flat.cpu()
    labels = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1]).to(b.y.device)
    return torch.where(b.y == IGNORE_INDEX, b.y, labels)  # sequences: padding stays out of the Fisher


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _owners(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that directly own trainable parameters."""
    return [(n, m) for n, m in model.named_modules()
            if any(p.requires_grad for p in m.parameters(recurse=False))]


def _accumulate_by_module(model: nn.Module, owners, b: Batch, objective, transform, sums: Importance) -> bool:
    """One batched forward and backward; each module's exact rule. False when the per-sample gradients at the
    modules' outputs are not separable (capture.py says when; then the caller takes the whole-model vmap)."""
    losses, calls, problem = forward_with_calls(owners, lambda: objective(_call(model, b.x, b.task), b.y),
                                                len(b.y))
    if problem is not None:
        return False
    names = [n for n, _ in owners if n in calls]
    modules = dict(owners)

    def apply(name: str, g: Tensor) -> None:
        call = calls[name]
        prefix = f"{name}." if name else ""
        module = modules[name]
        for local, value in rules.rule_for(module)(module, call.args, call.kwargs, g, transform).items():
            sums[prefix + local] += value

    # A Linear layer on [N, in] has per-sample squares g_n^2 a_n^2, so several objectives' squares (the exact
    # Fisher's classes) add up before its one matrix product: pass sqrt(sum_k g_k^2), whose square is that sum.
    pooled = {n for n in names if len(losses) > 1 and transform is torch.square
              and rules.rule_for(modules[n]) is rules.linear and calls[n].args[0].dim() == 2}
    squares: dict[str, Tensor] = {}
    for k, loss in enumerate(losses):  # one backward per objective, from one forward pass
        grads = torch.autograd.grad(loss, [calls[n].output for n in names], allow_unused=True,
                                    retain_graph=k < len(losses) - 1)
        for name, g in zip(names, grads, strict=True):
            if g is None:
                continue
            if name in pooled:
                squares[name] = squares[name] + g.detach().square() if name in squares else g.detach().square()
            else:
                apply(name, g.detach())
    for name, total in squares.items():
        apply(name, total.sqrt())
    return True


def _accumulate_vmap(model: nn.Module, b: Batch, objective, transform, sums: Importance,
                     chunk_size: int) -> None:
    """`objective` is a `_sample_objective`: [K] terms per sample, each term's gradient transformed."""
    params = {n: p.detach() for n, p in _trainable(model).items()}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())
    takes_task = isinstance(model, ContinualClassifier)

    def sample_objective(p, x, y, t):
        x1 = tree_map(lambda v: v.unsqueeze(0), x)
        args = (x1, t.unsqueeze(0)) if takes_task else (x1,)
        logits = functional_call(model, ({**p, **frozen}, buffers), args)
        return objective(logits, y.unsqueeze(0))

    per_sample = vmap(jacrev(sample_objective), in_dims=(None, 0, 0, 0), randomness="different")
    for start in range(0, len(b.y), chunk_size):
        sl = slice(start, start + chunk_size)
        g = per_sample(params, _take(b.x, sl), b.y[sl], b.task[sl])  # [n, K, *shape]
        for n, gn in g.items():
            sums[n] += transform(gn).sum((0, 1))


def _accumulate_loop(model: nn.Module, b: Batch, objective, transform, sums: Importance) -> None:
    params = _trainable(model)
    for i in range(len(b.y)):
        x = _take(b.x, slice(i, i + 1))
        losses = objective(_call(model, x, b.task[i: i + 1]), b.y[i: i + 1])
        for k, loss in enumerate(losses):
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True,
                                        retain_graph=k < len(losses) - 1)
            for n, g in zip(params, grads, strict=True):
                if g is not None:
                    sums[n] += transform(g)


def _estimate(kind: str, model: nn.Module, batches: Iterable[Any], *, true_fisher: bool = False,
              max_samples: int | None = None, method: str = "auto", chunk_size: int = 256,
              generator: torch.Generator | None = None) -> Importance:
    if method not in METHODS:
        raise ValueError(f"unknown importance method {method!r}; choose one of {METHODS}")
    objective = _objective(kind)
    transform = torch.abs if kind == "mas" else torch.square
    # plain tensors of the parameters' full shapes, also when FSDP shards them (DTensor parameters)
    sums = {n: torch.zeros(tuple(p.shape), dtype=p.dtype, device=p.device) for n, p in _trainable(model).items()}
    owners = _owners(model) if method == "auto" else None
    was_training = model.training
    model.eval()  # no dropout noise in the estimate
    count = 0
    try:
        for b in _limited(batches, max_samples):
            if true_fisher:
                b = Batch(b.x, _sampled_labels(model, b, generator), b.task)
            done = owners is not None and _accumulate_by_module(model, owners, b, objective, transform, sums)
            if not done and method == "loop":
                _accumulate_loop(model, b, objective, transform, sums)
            elif not done:
                part = {n: torch.zeros_like(v) for n, v in sums.items()}
                way = "vmap"
                try:
                    per_chunk = max(1, chunk_size // (10 if kind == "exact" else 1))  # K classes' gradients each
                    _accumulate_vmap(model, b, _sample_objective(kind), transform, part, per_chunk)
                except RuntimeError:  # vmap cannot trace data-dependent code (transformers' mask checks)
                    if method == "vmap":
                        raise
                    part = {n: torch.zeros_like(v) for n, v in sums.items()}
                    _accumulate_loop(model, b, objective, transform, part)
                    way = "loop"
                if method == "auto":
                    WHOLE_MODEL_FALLBACKS[way] += 1
                for n, v in part.items():
                    sums[n] += v
            count += len(b.y)
    finally:
        model.train(was_training)
    return _mean(sums, count, "importance needs at least one sample; the data was empty")


def _mean(sums: Importance, count: int, empty: str) -> Importance:
    device = next(iter(sums.values())).device if sums else None
    total = torch.tensor(float(count), device=device)  # beside the sums: nccl reduces CUDA tensors only
    all_reduce_sum_([*sums.values(), total])  # under DDP each rank saw its shard: sum the shards
    if total == 0:
        raise ValueError(empty)
    return {n: s / total for n, s in sums.items()}


def _batched(model: nn.Module, batches: Iterable[Any], max_samples: int | None, batch_size: int) -> Importance:
    """Mean over mini-batches of `batch_size` of the squared gradient of each batch's mean loss."""
    params = _trainable(model)
    sums = {n: torch.zeros(tuple(p.shape), dtype=p.dtype, device=p.device) for n, p in params.items()}
    was_training = model.training
    model.eval()
    count = 0
    try:
        for b in _limited(batches, max_samples):
            for start in range(0, len(b.y), batch_size):  # the caller's batches cut to the mini-batch size
                sl = slice(start, start + batch_size)
                logits = _call(model, _take(b.x, sl), b.task[sl])  # sequences: the mean over the batch's tokens
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b.y[sl].reshape(-1),
                                       ignore_index=IGNORE_INDEX)
                grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                for n, g in zip(params, grads, strict=True):
                    if g is not None:
                        sums[n] += g.square()
                count += 1
    finally:
        model.train(was_training)
    return _mean(sums, count, "importance needs at least one batch; the data was empty")


def fisher_diagonal(model: nn.Module, batches: Iterable[Any], *, true_fisher: bool = False,
                    max_samples: int | None = None, method: str = "auto", chunk_size: int = 256,
                    generator: torch.Generator | None = None, fisher: str | None = None,
                    batch_size: int = 128) -> Importance:
    """Diagonal Fisher information, the mean over samples of the squared per-sample gradient of
    the log-likelihood (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural
    networks").

    `fisher` (see the module's docstring): "empirical" (the default: the data's labels), "true"
    (one label per sample drawn from the model; `true_fisher=True` is the same), "exact" (the
    expectation over the classes: C backward passes, exact per-sample squares) or "batched" (the
    squared gradient of each `batch_size` mini-batch's mean loss, averaged over batches: about
    1/batch_size of the others, so its strengths are not comparable with theirs; `method` does not
    apply). `batches` yields `Batch`es or (x, y[, task]) tuples.

    >>> import torch
    >>> net = torch.nn.Linear(3, 2)
    >>> data = [(torch.randn(8, 3), torch.randint(0, 2, (8,)))]
    >>> f = fisher_diagonal(net, data)
    >>> sorted(f), f["weight"].shape
    (['bias', 'weight'], torch.Size([2, 3]))
    >>> p = torch.softmax(net(data[0][0]), -1).detach()
    >>> e = fisher_diagonal(net, data, fisher="exact")  # the bias's: E[p_o (1 - p_o)] in closed form
    >>> bool(torch.allclose(e["bias"], (p * (1 - p)).mean(0), atol=1e-6))
    True
    """
    if fisher is not None and true_fisher and fisher != "true":
        raise ValueError(f"true_fisher=True asks for the sampled Fisher, which contradicts fisher={fisher!r}")
    kind = fisher or ("true" if true_fisher else "empirical")
    if kind not in FISHERS:
        raise ValueError(f"unknown fisher {kind!r}; choose one of {FISHERS}")
    if kind == "batched":
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        return _batched(model, batches, max_samples, batch_size)
    return _estimate("exact" if kind == "exact" else "fisher", model, batches, true_fisher=kind == "true",
                     max_samples=max_samples, method=method, chunk_size=chunk_size, generator=generator)


def output_sensitivity(model: nn.Module, batches: Iterable[Any], *, max_samples: int | None = None,
                       method: str = "auto", chunk_size: int = 256) -> Importance:
    """MAS importance: mean over samples of |d ||f(x)||^2 / d theta| over the live logits
    (Aljundi et al. 2018, "Memory Aware Synapses"). Labels are not used."""
    return _estimate("mas", model, batches, max_samples=max_samples, method=method, chunk_size=chunk_size)
