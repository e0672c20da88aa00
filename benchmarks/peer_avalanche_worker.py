"""Avalanche's side of benchmarks/peer_avalanche.py; runs in Avalanche's own virtual environment (it does
not import lifelong). Trains Avalanche's EWC (or Naive) on the tasks saved by the caller and prints one
JSON object: the accuracy matrix (scored here, the same way as lifelong's side) and the seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch import nn


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(y), 1000))
    model.train()
    return correct / len(y)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", choices=("ewc", "naive"), default="ewc")
    p.add_argument("--ewc-lambda", type=float, default=1000.0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--reset-optimizer", action="store_true", help="a fresh optimizer state per experience")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    import avalanche
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset
    from avalanche.training import EWC, Naive
    from avalanche.training.plugins import EvaluationPlugin

    data = torch.load(args.data)
    train = [_make_taskaware_tensor_classification_dataset(x, y, task_labels=0) for x, y in data["train"]]
    test = [_make_taskaware_tensor_classification_dataset(x, y, task_labels=0) for x, y in data["test"]]
    benchmark = benchmark_from_datasets(train=train, test=test)
    torch.manual_seed(args.seed)
    layers: list[nn.Module] = [nn.Flatten()]
    for width_in, width_out in ((784, 400), (400, 400)):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        if args.dropout > 0:
            layers.append(nn.Dropout(args.dropout))
    model = nn.Sequential(*layers, nn.Linear(400, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    common = {"model": model, "optimizer": optimizer, "criterion": nn.CrossEntropyLoss(), "train_mb_size": 128,
              "train_epochs": 1, "eval_mb_size": 1000, "evaluator": EvaluationPlugin(loggers=[])}
    strategy = (EWC(ewc_lambda=args.ewc_lambda, mode="separate", **common) if args.strategy == "ewc"
                else Naive(**common))
    matrix, train_seconds, train_cpu = [], 0.0, 0.0
    start, start_cpu = time.perf_counter(), time.process_time()
    for experience in benchmark.train_stream:
        t0, c0 = time.perf_counter(), time.process_time()
        if args.reset_optimizer:
            optimizer.state.clear()
        strategy.train(experience)
        train_seconds += time.perf_counter() - t0
        train_cpu += time.process_time() - c0
        matrix.append([accuracy(model, x, y) for x, y in data["test"]])
    print(json.dumps({"accuracy_matrix": matrix, "seconds": time.perf_counter() - start,
                      "cpu_seconds": time.process_time() - start_cpu, "train_seconds": train_seconds,
                      "train_cpu_seconds": train_cpu, "avalanche": avalanche.__version__,
                      "torch": torch.__version__, "torch_threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
