"""What EWC costs on GPTs from 10M to 350M parameters, measured a few steps at a time, and the
projection to 1B, 70B and 400B from the measured per-parameter costs.

    python benchmarks/lm_cost.py measure --sizes gpt-10m,gpt-100m,gpt-350m   # one process per size
    python benchmarks/lm_cost.py measure --device cuda --batch 64 --sizes gpt-350m  # on a GPU, alone on it
    torchrun --nproc_per_node 2 benchmarks/lm_cost.py fsdp --size gpt-10m    # 2 ranks, gloo
    python benchmarks/lm_cost.py penalty --size gpt-100m                      # the penalty's kernels alone
    python benchmarks/lm_cost.py fold --size gpt-100m                         # the penalty inside Adam's step
    python benchmarks/lm_cost.py methods --size gpt-16m --methods replay,distill+replay --set replay=2.5
    python benchmarks/lm_cost.py table

For each size, on random bytes (cost does not depend on the text): Adam steps of `--batch` windows of
128 bytes, alternately naive and with EWC's closed-form penalty gradient (after backward: two fused
passes over the parameters), so that the machine's load hits both alike; the penalty's own time is
also measured alone. Then the per-sample Fisher (lifelong.importance, auto path) over `--batch`
sequences: seconds per 1,000 tokens, against training's seconds per 1,000 tokens. State bytes: the
quadratic's tensors per parameter. Under `fsdp`, each of 2 ranks holds half of every parameter and of
the penalty's state (FSDP2 `fully_shard`, gloo on CPU). `penalty` times the penalty's gradient alone as
the library runs it (fp32 and bf16 storage) and as one fused pass (torch.compile), with the bytes each
moves a parameter: what less memory traffic could save; `fold` times whole steps with the penalty
folded into a compiled Adam (benchmarks/lm_fold.py); `methods` times training steps of benchmarks/lm.py's
methods side by side (benchmarks/lm_method_cost.py); `table` prints them (benchmarks/lm_cost_table.py).
Results: results/lm-cost.json, merged per size
(and, for `measure`, per device and batch: a GPU's rows sit beside the CPU's, each with its own projection).
On a GPU every timed span ends with a synchronisation, so that a step's seconds are its kernels' seconds.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lifelong.importance import fisher_diagonal
from lifelong.models.gpt import GPT, gpt_config
from lifelong.reporting import environment, write_json
from lifelong.strategies.quadratic import QuadraticPenalty

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "lm-cost.json"
LENGTH = 128


def _batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 256, (n, LENGTH + 1), generator=g)
    return tokens[:, :-1].to(torch.uint8), tokens[:, 1:]


def _sync(device: torch.device) -> None:
    """Wait for the device's queued kernels: a GPU returns before its work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(model: torch.nn.Module, opt: Any, x, y, penalty: QuadraticPenalty | None) -> float:
    _sync(x.device)
    start = time.perf_counter()
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if penalty is not None:
        penalty.add_gradient_(model)
    opt.step()
    _sync(x.device)
    return time.perf_counter() - start


def _penalty_for(model: torch.nn.Module, fisher: dict[str, torch.Tensor]) -> QuadraticPenalty:
    q = QuadraticPenalty(strength=1.0)
    q.add(fisher, {n: p.detach() for n, p in model.named_parameters()})
    return q


def measure(size: str, batch: int, steps: int, device: str = "cpu") -> dict[str, Any]:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA device")
    torch.manual_seed(0)
    model = GPT(gpt_config(size, block_size=LENGTH)).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = (t.to(dev) for t in _batch(batch, 0))
    _step(model, opt, x, y, None)  # warm-up: Adam's state allocated, kernels chosen
    timings = []
    for _ in range(2):  # the first pass also allocates: the faster of two
        _sync(dev)
        start = time.perf_counter()
        fisher = fisher_diagonal(model, [(x, y)])
        _sync(dev)
        timings.append(time.perf_counter() - start)
    fisher_seconds = min(timings)
    penalty = _penalty_for(model, fisher)
    del fisher
    gc.collect()
    naive, ewc = [], []
    for _ in range(steps):  # alternate, so that a burst of load on the machine hits both
        naive.append(_step(model, opt, x, y, None))
        ewc.append(_step(model, opt, x, y, penalty))
    alone = []
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        _sync(dev)
        t = time.perf_counter()
        penalty.add_gradient_(model)
        _sync(dev)
        alone.append(time.perf_counter() - t)
    tokens = batch * LENGTH
    step = min(naive)
    on_device = {}
    if dev.type == "cuda":
        on_device = {"device_name": torch.cuda.get_device_name(dev),
                     "peak_device_gb": torch.cuda.max_memory_allocated(dev) / 2**30}
    return {"size": size, "parameters": params, "device": dev.type, **on_device,
            "batch": batch, "tokens_per_step": tokens, "steps": steps,
            "naive_step_seconds": naive, "ewc_step_seconds": ewc, "penalty_seconds": alone,
            "step_ratio_min": min(ewc) / step, "step_ratio_median": float(torch.tensor(ewc).median() /
                                                                           torch.tensor(naive).median()),
            "penalty_share_of_step": min(alone) / step,
            "train_seconds_per_1k_tokens": step / tokens * 1000,
            "importance_seconds_per_1k_tokens": fisher_seconds / tokens * 1000,
            "importance_to_training_per_token": fisher_seconds / step,
            "state_bytes": penalty.nbytes(), "state_bytes_per_parameter": penalty.nbytes() / params,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "threads": torch.get_num_threads()}


def fsdp(size: str, batch: int, steps: int) -> dict[str, Any] | None:
    """Under torchrun: FSDP2-sharded model, penalty state per rank, steps naive and with EWC."""
    from lifelong import distributed

    distributed.init_from_env()
    torch.manual_seed(0)
    model = GPT(gpt_config(size, block_size=LENGTH))
    params = sum(p.numel() for p in model.parameters())
    distributed.shard_model(model)
    local = distributed.local_numel(model)
    x, y = _batch(batch, distributed.rank() + 1)  # each rank its own samples
    start = time.perf_counter()
    fisher = fisher_diagonal(model, [(x, y)])
    fisher_seconds = time.perf_counter() - start
    penalty = _penalty_for(model, fisher)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    _step(model, opt, x, y, None)
    naive, ewc = [], []
    for _ in range(steps):
        naive.append(_step(model, opt, x, y, None))
        ewc.append(_step(model, opt, x, y, penalty))
    row = {"size": size, "parameters": params, "ranks": distributed.world_size(), "rank": distributed.rank(),
           "local_parameters": local, "state_bytes_rank": penalty.nbytes(),
           "state_bytes_per_local_parameter": penalty.nbytes() / local, "batch_per_rank": batch,
           "naive_step_seconds": naive, "ewc_step_seconds": ewc, "step_ratio_min": min(ewc) / min(naive),
           "importance_seconds": fisher_seconds}
    rows: list[Any] = [None] * distributed.world_size()
    torch.distributed.all_gather_object(rows, row)
    return {"size": size, "ranks": rows} if distributed.is_main() else None


# bytes each way of adding the penalty's gradient reads and writes per parameter (float32 grad and theta)
PENALTY_BYTES = {
    "fp32, two passes (the library's default)": 16 + 12,  # grad += lam P theta; grad -= lam P m
    "bf16 precision (the library's storage='bf16')": 4 + 4 + 2 + 8,  # read theta, m, P; grad += lam P (theta - m)
    "fp32, one fused pass (torch.compile)": 20,  # read grad, P, theta, P m; write grad
}


def _fastest(fn, reps: int) -> float:
    fn()  # first call allocates (and compiles)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def penalty_kernels(size: str, reps: int) -> dict[str, Any]:
    """The penalty's gradient alone, three ways, on a model of `size`: seconds, ns and bytes a parameter."""
    torch.manual_seed(0)
    model = GPT(gpt_config(size, block_size=LENGTH))
    params = list(model.parameters())
    count = sum(p.numel() for p in params)
    importance = {n: torch.rand_like(p) for n, p in model.named_parameters()}  # the time is the same for any values
    anchor = {n: p.detach() + 0.01 * torch.randn_like(p) for n, p in model.named_parameters()}  # a nonzero gradient
    for p in params:
        p.grad = torch.zeros_like(p)
    seconds: dict[str, float | None] = {}
    for storage, name in (("fp32", "fp32, two passes (the library's default)"),
                          ("bf16", "bf16 precision (the library's storage='bf16')")):
        q = QuadraticPenalty(strength=1.0, storage=storage)
        q.add(importance, anchor)
        seconds[name] = _fastest(lambda q=q: q.add_gradient_(model), reps)
        if storage == "fp32":
            slots = q.slots
            for p in params:
                p.grad.zero_()  # type: ignore[union-attr]
            q.add_gradient_(model)
            expected = [p.grad.clone() for p in params]  # type: ignore[union-attr]
    del importance, anchor
    gc.collect()
    grads = [p.grad.view(-1) for p in params]  # type: ignore[union-attr]
    values = [p.detach().view(-1) for p in params]
    precision = [s["precision"].view(-1) for s in slots]
    weighted_centre = [s["weighted_centre"].view(-1) for s in slots]

    def fused_pass(g: torch.Tensor, p: torch.Tensor, v: torch.Tensor, c: torch.Tensor) -> None:
        g.add_(p * v - c)

    name = "fp32, one fused pass (torch.compile)"
    kernel = torch.compile(fused_pass, dynamic=True)  # 1-D and dynamic: one kernel for every tensor

    def fused() -> None:
        for g, p, v, c in zip(grads, precision, values, weighted_centre, strict=True):
            kernel(g, p, v, c)

    for g in grads:
        g.zero_()
    try:
        fused()  # the first call compiles
    except Exception as error:  # no C++ compiler, or a backend that cannot build: say so, keep the rest
        print(f"{name}: not measured ({type(error).__name__}: {str(error)[:200]})", file=sys.stderr)
        seconds[name] = None
    else:
        for g, e in zip(grads, expected, strict=True):  # the library's gradient, or no timing
            torch.testing.assert_close(g, e.view(-1))
        seconds[name] = _fastest(fused, reps)
    return {"size": size, "parameters": count, "reps": reps, "threads": torch.get_num_threads(),
            "kernels": {k: {"seconds": v, "bytes_per_parameter": PENALTY_BYTES[k],
                            "ns_per_parameter": None if v is None else v / count * 1e9,
                            "gb_per_second": None if v is None else PENALTY_BYTES[k] * count / v / 1e9}
                        for k, v in seconds.items()}}


def _save(section: str, row: dict[str, Any]) -> None:
    """Merge `row` into the section: it replaces the row of its size, device and batch (and, for `methods`,
    of its options)."""
    saved = json.loads(OUT.read_text()) if OUT.exists() else {}
    env = environment()
    # each row keeps its own machine: rows measured on different hosts sit side by side in one file
    row = {**row, "environment": env}

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["size"], json.dumps(r.get("set"), sort_keys=True), r.get("device", "cpu"), r.get("batch")

    entries = [r for r in saved.get(section, []) if key(r) != key(row)] + [row]
    saved[section] = sorted(entries, key=lambda r: r.get("parameters", 0))
    saved["environment"] = env
    write_json(OUT, saved)


def measured(size: str, device: str, batch: int) -> bool:
    """Whether results/lm-cost.json holds `measure`'s row for this size, device type and batch."""
    saved = json.loads(OUT.read_text()) if OUT.exists() else {}
    return any((r["size"], r.get("device", "cpu"), r["batch"]) == (size, device, batch)
               for r in saved.get("single", []))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["measure", "fsdp", "penalty", "fold", "methods", "table"])
    p.add_argument("--sizes", default="gpt-10m,gpt-100m,gpt-350m")
    p.add_argument("--size", default="gpt-10m")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="measure: where the steps run (cpu, cuda, cuda:1)")
    p.add_argument("--resume", action="store_true",
                   help="measure: skip a size the file already holds at this device and batch")
    p.add_argument("--methods", default="replay,distill+replay,ewc+replay",
                   help="methods: benchmarks/lm.py's method names, the first the one the others are divided by")
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                   help="methods: an option for every method, as benchmarks/lm.py's --set (one value)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "table":
        from lm_cost_table import print_tables

        return print_tables(OUT)
    if args.command == "penalty":
        timed = penalty_kernels(args.size, max(args.steps, 5))
        _save("penalty", timed)
        for name, k in timed["kernels"].items():
            if k["seconds"] is not None:
                print(f"{args.size}: {name}: {k['ns_per_parameter']:.2f} ns a parameter, {k['gb_per_second']:.1f} GB/s")
        return 0
    if args.command == "fold":
        from lm_fold import fold_steps  # it imports this module's step

        folded = fold_steps(args.size, args.batch, args.steps)
        _save("fold", folded)
        print(f"{args.size}: step ratio EWC/naive with torch's Adam and the library's gradient "
              f"{folded['step_ratio_library']:.3f}; with the penalty folded into a compiled Adam "
              f"{folded['step_ratio_folded']:.3f} (median {folded['step_ratio_folded_median']:.3f}); compiled naive / "
              f"torch naive {folded['compiled_to_torch_naive']:.3f}")
        return 0
    if args.command == "methods":
        from lm_cost_table import methods_table
        from lm_method_cost import method_steps
        from lm_plan import parse_sets

        combos = parse_sets(args.set)
        if len(combos) != 1:
            p.error("methods takes one value per --set option")
        try:
            timed = method_steps(args.size, args.methods.split(","), combos[0], args.steps)
        except ValueError as e:  # an unknown method or option, too many steps: said before anything is timed
            p.error(str(e))
        _save("methods", timed)
        print(methods_table(timed))
        return 0
    if args.command == "fsdp":
        row = fsdp(args.size, args.batch, args.steps)
        if row is not None:
            _save("fsdp", row)
            print(json.dumps(row)[:400])
        return 0
    for size in args.sizes.split(","):
        if args.resume and measured(size, torch.device(args.device).type, args.batch):
            print(f"{size}: already measured on {args.device} at --batch {args.batch} (--resume)")
            continue
        try:
            row = measure(size, args.batch, args.steps, args.device)
        except ValueError as e:  # an unknown size or an absent device: said before anything is timed
            p.error(str(e))
        _save("single", row)
        print(f"{size}: {row['parameters']:,} params, step ratio {row['step_ratio_min']:.3f} (median "
              f"{row['step_ratio_median']:.3f}), penalty {row['penalty_share_of_step']:.2%} of a step, importance "
              f"{row['importance_to_training_per_token']:.2f}x training per token, state "
              f"{row['state_bytes_per_parameter']:.1f} B/param", flush=True)
        del row
        gc.collect()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
