"""What consolidation costs, measured in one process and reported as ratios to plain training.

    python benchmarks/speed.py            # everything (make bench), about 20 minutes on 2 cores
    python benchmarks/speed.py --quick    # smaller sizes, no end-to-end runs (a smoke test)

a. importance throughput: per-sample loop, whole-model vmap, lifelong's per-module path, and the
   mini-batch shortcut (mean of squared batch-mean gradients) with its error against the exact value;
b. training-step time of each strategy as a ratio to a naive step;
c. EWC step time with 1, 5, 20 and 50 earlier tasks, as a ratio to 1;
d. consolidation state in bytes per parameter, and peak resident memory after 1 and 20 tasks;
e. end-to-end seconds of 5- and 10-task Permuted Fashion-MNIST runs, naive and each consolidation strategy;
f. step ratio and state bytes for MLPs of about 1M, 10M and 100M parameters;
g. cheaper EWC state (bf16 importance, top 10 % and 1 %, 1,024 and 256 samples): state, time and
   retention on 10-task Permuted Fashion-MNIST.
Writes results/speed.json after every section; `--sections abcd` runs some and keeps the others' results.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lifelong.data import Batch, StreamConfig, build_stream
from lifelong.importance import fisher_diagonal
from lifelong.learner import Learner, LearnerConfig
from lifelong.models import CNN, MLP, ContinualClassifier
from lifelong.reporting import environment, write_json
from lifelong.run import ModelConfig, RunConfig, run
from lifelong.strategies import build_strategy
from lifelong.strategies.base import state_nbytes

ROOT = Path(__file__).resolve().parent.parent
STEP_STRATEGIES = ["naive", "ewc", "online-ewc", "si", "mas", "replay", "ewc+replay"]


def _data(n: int):
    """Real Fashion-MNIST images when installed, else the digits upsampled (same shapes)."""
    try:
        stream = build_stream(StreamConfig("permuted-fmnist", tasks=2))
    except Exception:  # the benchmark still runs without the data, and says which data it used
        stream = None
    if stream is None:
        from lifelong.data import load_digits

        train, _ = load_digits()
        x = F.interpolate(train.x, size=28).repeat(n // len(train.x) + 1, 1, 1, 1)[:n]
        return x, train.y.repeat(n // len(train.y) + 1)[:n], "digits (upsampled)"
    x, y = stream[0].train.get_batch(torch.arange(n))
    return x, y, "fashion-mnist"


def _timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _loop_fisher(model, x, y):
    return fisher_diagonal(model, [(x, y)], method="loop")


def _minibatch_fisher(model, batches, like):
    """The common shortcut: mean over batches of the squared gradient of the batch-mean loss."""
    total = {k: torch.zeros_like(v) for k, v in like.items()}
    for bx, by in batches:
        model.zero_grad()
        F.cross_entropy(model(bx), by).backward()
        for k, p in model.named_parameters():
            if k in total:
                total[k] += p.grad ** 2
    return {k: v / len(batches) for k, v in total.items()}


def importance_row(name: str, model, x, y, n: int, repeat: int = 3) -> dict:
    model.eval()
    batches = [(x[i: i + 128], y[i: i + 128]) for i in range(0, n, 128)]
    n_loop = min(n, 256, max(64, n // 4))  # the loop is slow: time it on fewer samples, report per sample
    loop_s = _timed(lambda: _loop_fisher(model, x[:n_loop], y[:n_loop]), 1) / n_loop
    try:
        vmap_s: float | None = _timed(lambda: fisher_diagonal(model, batches, method="vmap"), 1) / n
    except RuntimeError:  # transformers' attention-mask code branches on data, which vmap cannot trace
        vmap_s = None
    exact = fisher_diagonal(model, batches)
    big = [(x[:n], y[:n])]  # lifelong's path in the batches the learner gives it (importance_batch 1024)
    auto_s = _timed(lambda: fisher_diagonal(model, big), repeat) / n
    mb_s = _timed(lambda: _minibatch_fisher(model, batches, exact), repeat) / n
    approx = _minibatch_fisher(model, batches, exact)
    flat_exact = torch.cat([v.flatten() for v in exact.values()])
    flat_mb = torch.cat([approx[k].flatten() for k in exact])
    loop_check = _loop_fisher(model, x[:64], y[:64])
    auto_check = fisher_diagonal(model, [(x[:64], y[:64])])
    top = max(float(v.abs().max()) for v in loop_check.values())
    # tensors whose exact gradient is zero (attention key biases: softmax ignores them) hold rounding
    # noise of 1e-19 in both paths; their relative difference says nothing
    max_rel = max(float((auto_check[k] - loop_check[k]).abs().max() / loop_check[k].abs().max())
                  for k in loop_check if float(loop_check[k].abs().max()) > 1e-10 * top)
    return {"model": name, "parameters": sum(p.numel() for p in model.parameters()),
            "loop_samples_per_s": 1 / loop_s, "vmap_samples_per_s": 1 / vmap_s if vmap_s else None,
            "lifelong_samples_per_s": 1 / auto_s, "minibatch_samples_per_s": 1 / mb_s,
            "speedup_vs_loop": loop_s / auto_s, "speedup_vs_vmap": vmap_s / auto_s if vmap_s else None,
            "max_relative_difference_vs_loop": max_rel,
            "minibatch_scale": float(flat_mb.sum() / flat_exact.sum()),
            "minibatch_relative_error": float((flat_mb - flat_exact).norm() / flat_exact.norm())}


def _learner(name: str, net_factory, x, y, earlier_tasks: int = 1, memory: int = 600) -> Learner:
    torch.manual_seed(0)
    model = ContinualClassifier(net_factory(), 1, 10)
    options = {"memory": memory} if "replay" in name else {}
    learner = Learner(model, build_strategy(name, options), LearnerConfig(batch_size=128))
    learner.optimizer = learner._new_optimizer()
    s = learner.strategy
    n_fit = min(len(y), 1024)
    for _ in range(earlier_tasks):  # consolidate earlier tasks, so the penalty is live while timing
        s.before_task(model, 0)
        for i in range(0, n_fit, 128):  # fills replay's memory and SI's path
            learner.train_step(Batch(x[i: i + 128], y[i: i + 128], torch.zeros(len(y[i: i + 128]), dtype=torch.long)))
        s.after_task(model, 0, [(x[:256], y[:256])])
    s.before_task(model, 0)
    return learner


def step_times(names: list[str], net_factory, x, y, rounds: int, steps: int, earlier: dict | None = None):
    """Median seconds per training step of each learner, timed in interleaved rounds."""
    earlier = earlier or {}
    learners = {n: _learner(n.split("@")[0], net_factory, x, y, earlier.get(n, 1)) for n in names}
    batches = [Batch(x[i: i + 128], y[i: i + 128], torch.zeros(128, dtype=torch.long))
               for i in range(0, min(len(y), 128 * steps) - 127, 128)]
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            lr = learners[n]
            t0 = time.perf_counter()
            for b in batches:
                lr.train_step(b)
            times[n].append((time.perf_counter() - t0) / len(batches))
    return {n: statistics.median(v) for n, v in times.items()}, learners


def state_bytes_per_parameter(learner: Learner) -> float:
    return state_nbytes(learner.strategy.state_dict()) / sum(p.numel() for p in learner.model.parameters())


RSS_GROWTH = """
import gc, os, torch
from lifelong.models import MLP, ContinualClassifier
from lifelong.strategies import build_strategy
from lifelong.strategies.base import state_nbytes
def resident():
    gc.collect()
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
torch.manual_seed(0)
model = ContinualClassifier(MLP(784, (400, 400), 10), 1, 10)
s = build_strategy("ewc")
x, y = torch.rand(256, 784), torch.randint(0, 10, (256,))
s.after_task(model, 0, [(x, y)])
start, out = resident(), {{}}
for t in range(1, {tasks} + 1):
    if t > 1:
        s.after_task(model, 0, [(x, y)])
    out[t] = {{"rss_growth": resident() - start, "state": state_nbytes(s.state_dict())}}
print(out)
"""


def memory_by_tasks(tasks: int) -> dict[int, dict[str, int]]:
    """The EWC state's own bytes and the growth of resident memory since the first task, after 1..N tasks
    (the process's baseline, hundreds of MB of torch, would hide a state of 2 MB: deltas show it)."""
    out = subprocess.run([sys.executable, "-c", RSS_GROWTH.format(tasks=tasks)], capture_output=True, text=True,
                         check=True)
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def end_to_end(tasks: int, strategies: list[str]) -> dict[str, float]:
    """Training seconds of each run; a name may carry options: `ewc:samples=1024`."""
    out = {}
    for spec in strategies:
        name, _, given = spec.partition(":")
        options: dict = {"memory": 600} if "replay" in name else {}
        for k, v in (kv.split("=") for kv in given.split(";") if kv):
            options[k] = None if v == "all" else int(v) if v.isdigit() else float(v)
        r = run(RunConfig(StreamConfig("permuted-fmnist", tasks=tasks), name, options, LearnerConfig(),
                          ModelConfig("mlp", (400, 400), 0.2), seed=0)).record
        out[spec] = r["train_seconds"]
    return out


OPTION_VARIANTS: dict[str, dict[str, Any]] = {
    "bf16 importance": {"storage": "bf16"}, "top 1 %": {"keep": 0.01},
    "Fisher from 1,024 samples": {"samples": 1024}, "top 10 %": {"keep": 0.1},
    "Fisher from 256 samples": {"samples": 256}}


def consolidation_options() -> Iterator[dict]:
    """Each cheaper form of EWC's state, in the vision benchmark's regime, against the dense default."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from suite import tuned_options
    from vision import SETTINGS

    setting = SETTINGS["permuted"]
    base, _ = tuned_options(setting, "ewc")
    rows = []
    # the dense default is the vision benchmark's EWC run with seed 0: reuse it when it is saved
    saved = ROOT / "results" / "vision-permuted.json"
    dense = [r for r in json.loads(saved.read_text())["runs"] if r["strategy"] == "ewc" and r["config"]["seed"] == 0
             and {k: v for k, v in r["config"]["strategy_options"].items() if k != "seed"} == base] \
        if saved.exists() else []
    if dense:
        r = dense[0]
        rows.append({"variant": "dense fp32 (default)", "options": base, "state_bytes": r["state_bytes"],
                     "from": "results/vision-permuted.json",
                     **{k: r[k] for k in ("average_accuracy", "average_retention", "learning_accuracy",
                                          "train_seconds")}})
        yield rows[-1]
    variants = OPTION_VARIANTS if dense else {"dense fp32 (default)": {}, **OPTION_VARIANTS}
    for variant, extra in variants.items():
        r = run(RunConfig(setting.stream, "ewc", {**base, **extra}, setting.learner, setting.model, seed=0)).record
        rows.append({"variant": variant, "options": {**base, **extra}, "state_bytes": r["state_bytes"],
                     **{k: r[k] for k in ("average_accuracy", "average_retention", "learning_accuracy",
                                          "train_seconds")}})
        yield rows[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(ROOT / "results" / "speed.json"))
    p.add_argument("--sections", default="abcdefg", help="which sections to run, e.g. abcd (default: all)")
    p.add_argument("--end-to-end", default="naive,ewc,ewc:samples=all,online-ewc,si,mas",
                   help="strategies timed in section e (NAME:OPTION=VALUE;... for options)")
    p.add_argument("--widths", default="700,2800,9600", help="hidden widths of section f's MLPs (1M, 10M, 100M)")
    args = p.parse_args()
    n = 512 if args.quick else 1024
    x, y, source = _data(max(n, 128 * 30))
    result: dict = {}
    if set(args.sections) != set("abcdefg") and Path(args.out).exists():  # some sections: keep the others'
        result = json.loads(Path(args.out).read_text())
    result.update({"data": source, "environment": environment(), "torch_threads": torch.get_num_threads()})

    def mlp():
        return MLP(784, (400, 400), 10)

    def cnn():
        return CNN(1, 28, 10, 128)

    models = {"mlp 784-400-400-10": (mlp(), x[:n], y[:n]), "cnn (2 conv + 2 fc)": (cnn(), x[:n], y[:n])}
    from lifelong import encoders
    from lifelong.models import text

    if encoders.encoder_available():  # the language benchmark's encoder, fine-tuned: real CLINC150 queries
        from lifelong.data.text import load_clinc150

        queries = load_clinc150().splits["train"][:n]
        ids = encoders.tokenize([q for q, _ in queries])
        labels = torch.arange(len(ids)) % 15
        models["MiniLM-L6 encoder + head (fine-tuned)"] = (text.benchmark_encoder_model(), ids, labels)
        lora = text.build_text_model("lora", 15)
        models["MiniLM-L6 LoRA adapters + head"] = (lora, ids, labels)
    if "a" in args.sections:
        importance_section(result, models, n)
        write_json(args.out, result)  # saved after every section: a stopped run keeps what it measured
    if "b" in args.sections or "c" in args.sections or "d" in args.sections:
        steps_section(result, mlp, x, y, args.quick)
        write_json(args.out, result)
    if "e" in args.sections and not args.quick and source == "fashion-mnist":
        print("e. end-to-end training seconds (importance included), Permuted Fashion-MNIST", flush=True)
        result["end_to_end_seconds"] = {}
        for tasks in (5, 10):
            secs = end_to_end(tasks, args.end_to_end.split(","))
            result["end_to_end_seconds"][tasks] = secs
            write_json(args.out, result)
            print(f"  {tasks} tasks: " + ", ".join(f"{k} {v:.1f} s ({v / secs['naive']:.2f}x)"
                                                   for k, v in secs.items()), flush=True)
    if "f" in args.sections:
        size_section(result, x, y, args.quick, [int(w) for w in args.widths.split(",")])
        write_json(args.out, result)
    if "g" in args.sections and not args.quick and source == "fashion-mnist":
        print("g. cheaper consolidation state: EWC on 10-task Permuted Fashion-MNIST (test split)", flush=True)
        result["options"] = []
        for row in consolidation_options():
            result["options"].append(row)
            write_json(args.out, result)
            print(f"  {row['variant']}: final {row['average_accuracy']:.3f}, retention {row['average_retention']:.3f}, "
                  f"learning {row['learning_accuracy']:.3f}, state {row['state_bytes'] / 2**20:.2f} MiB, "
                  f"{row['train_seconds']:.0f} s", flush=True)
    write_json(args.out, result)
    print(f"written to {args.out}")
    return 0


def importance_section(result: dict, models: dict, n: int) -> None:
    print("a. importance throughput (samples/s)", flush=True)
    # the encoder's rows use 256 queries (64 in the loop) and one timing each: a 22.7M-parameter
    # transformer's per-sample loop takes minutes on 2 cores
    result["importance"] = [importance_row(name, model, x, y, n) if "MiniLM" not in name else
                            importance_row(name, model, x[:256], y[:256], min(n, 256), repeat=1)
                            for name, (model, x, y) in models.items()]
    for row in result["importance"]:
        vmap = f"{row['vmap_samples_per_s']:.0f}" if row["vmap_samples_per_s"] else "fails (data-dependent mask code)"
        print(f"  {row['model']}: loop {row['loop_samples_per_s']:.0f}, vmap {vmap}, "
              f"lifelong {row['lifelong_samples_per_s']:.0f} ({row['speedup_vs_loop']:.0f}x loop), "
              f"mini-batch {row['minibatch_samples_per_s']:.0f} (scale {row['minibatch_scale']:.4f}, "
              f"rel. error {row['minibatch_relative_error']:.2f}); max diff vs loop "
              f"{row['max_relative_difference_vs_loop']:.1e}", flush=True)


def steps_section(result: dict, mlp, x, y, quick: bool) -> None:
    rounds, steps = (5, 10) if quick else (15, 25)
    print("b. step time, ratio to naive", flush=True)
    medians, learners = step_times(STEP_STRATEGIES, mlp, x, y, rounds, steps)
    result["step_ratio"] = {k: v / medians["naive"] for k, v in medians.items()}
    result["step_seconds"] = medians
    for k, v in result["step_ratio"].items():
        print(f"  {k}: {v:.3f}  ({medians[k] * 1e3:.2f} ms)", flush=True)

    print("c. EWC step time by number of earlier tasks, ratio to 1", flush=True)
    counts = [1, 5, 20, 50]
    names = [f"ewc@{k}" for k in counts]
    med_tasks, task_learners = step_times(names, mlp, x, y, rounds, steps, dict(zip(names, counts, strict=True)))
    result["step_ratio_by_tasks"] = {k: med_tasks[f"ewc@{k}"] / med_tasks["ewc@1"] for k in counts}
    for k, v in result["step_ratio_by_tasks"].items():
        print(f"  {k} tasks: {v:.3f}", flush=True)

    print("d. state bytes per parameter; peak RSS", flush=True)
    result["state_bytes_per_parameter"] = {k: state_bytes_per_parameter(v) for k, v in learners.items()}
    result["ewc_state_bytes_per_parameter_by_tasks"] = {k: state_bytes_per_parameter(task_learners[f"ewc@{k}"])
                                                        for k in counts}
    result["memory_by_tasks"] = memory_by_tasks(20)
    for k, v in result["state_bytes_per_parameter"].items():
        print(f"  {k}: {v:.1f} B/param", flush=True)
    growth = {t: round(v["rss_growth"] / 2**20, 1) for t, v in result["memory_by_tasks"].items() if t in (1, 10, 20)}
    print(f"  EWC by tasks: {result['ewc_state_bytes_per_parameter_by_tasks']}; resident memory growth {growth} MiB",
          flush=True)



def size_section(result: dict, x, y, quick: bool, widths: list[int]) -> None:
    rounds, steps = (5, 10) if quick else (15, 25)
    print("f. cost by model size (MLP 784-h-h-10)", flush=True)
    widths = [700, 2800] if quick else widths
    result["by_size"] = []
    for h in widths:
        def factory(h=h):
            return MLP(784, (h, h), 10)

        med, size_learners = step_times(["naive", "ewc", "si", "mas"], factory, x, y, 3 if h > 5000 else rounds,
                                        3 if h > 5000 else steps)
        params = sum(p.numel() for p in size_learners["naive"].model.parameters())
        row = {"hidden": h, "parameters": params, "naive_step_seconds": med["naive"],
               **{f"{k}_step_ratio": med[k] / med["naive"] for k in ("ewc", "si", "mas")},
               "ewc_state_bytes": params * state_bytes_per_parameter(size_learners["ewc"])}
        result["by_size"].append(row)
        print(f"  {params / 1e6:.1f}M params: naive {med['naive'] * 1e3:.1f} ms/step, "
              f"EWC x{row['ewc_step_ratio']:.3f}, "
              f"SI x{row['si_step_ratio']:.3f}, MAS x{row['mas_step_ratio']:.3f}, EWC state "
              f"{row['ewc_state_bytes'] / 2**20:.0f} MiB", flush=True)
        del size_learners


if __name__ == "__main__":
    sys.exit(main())
