"""The 10-task Permuted Fashion-MNIST EWC run on 1 process and on 2 torchrun ranks (DDP, gloo on CPU):
wall time and retention, written to results/scale.json.

Same options as the vision benchmark's EWC row (tuned λ, 2 epochs, dropout 0.3). The 1-process run
uses torch's default thread count unless OMP_NUM_THREADS says otherwise (the README's line sets it to
1, the same as each rank gets from torchrun on a 2-core machine); the count is recorded.

    python benchmarks/scale.py [--tasks 10] [--ranks 2]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from suite import ROOT, tuned_options
from vision import SETTINGS

from lifelong.reporting import environment, write_json


def _command(args: argparse.Namespace) -> list[str]:
    setting = SETTINGS["permuted"]
    strength = tuned_options(setting, "ewc")[0].get("strength", 300.0)
    return ["-m", "lifelong", "run", "--benchmark", "permuted-fmnist", "--tasks", str(args.tasks), "--strategy", "ewc",
            "--lambda", str(strength), "--epochs", str(setting.learner.epochs), "--dropout", str(setting.model.dropout),
            "--seed", "0", "--json", "--quiet"]


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - start, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "results" / "scale.json"))
    args = p.parse_args()
    base = _command(args)
    rows = []
    seconds, single = _timed([sys.executable, *base])
    rows.append({"ranks": 1, "wall_seconds": seconds, **{k: single[k] for k in (
        "average_accuracy", "learning_accuracy", "average_retention")}})
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        raise SystemExit(f"no torchrun beside {sys.executable}: install torch in that environment")
    seconds, multi = _timed([torchrun, "--nproc_per_node", str(args.ranks), *base, "--distributed"])
    rows.append({"ranks": args.ranks, "wall_seconds": seconds, **{k: multi[k] for k in (
        "average_accuracy", "learning_accuracy", "average_retention")}})
    for row in rows:
        print(f"{row['ranks']} rank(s): {row['wall_seconds']:.0f} s, final {row['average_accuracy']:.3f}, "
              f"learning {row['learning_accuracy']:.3f}, retention {row['average_retention']:.3f}")
    write_json(args.out, {"command": " ".join(base), "rows": rows, "environment": environment(),
                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})
    print(f"written to {Path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
