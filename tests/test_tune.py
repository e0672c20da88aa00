"""benchmarks/tune.py: a search over several grids reuses what earlier tunings measured, and refuses
rows from another regime (the real tuning files of the fine-tuned CLINC150 setting; no run is needed)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUNING = ROOT / "results" / "tuning"
MAIN = TUNING / "clinc150-task-finetune-online-kfac-ewc.json"
PROBE = TUNING / "valid-probe-clinc150-task-finetune-online-kfac-ewc-lr2e-4.json"


def _tune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tune.py"), "--setting", "language:finetune-task",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_reused_grid_points_are_not_run_again_and_join_the_choice(tmp_path):
    out = tmp_path / "tuned.json"
    done = _tune("--strategy", "online-kfac-ewc", "--grid", "strength=1e4", "--grid", "learner.lr=1e-4,2e-4",
                 "--reuse", str(MAIN), "--reuse", str(PROBE), "--out", str(out))
    assert done.returncode == 0, done.stderr
    saved = json.loads(out.read_text())
    rows = saved["rows"][1:]
    assert rows and all("from" in r for r in rows)  # every point was measured before: nothing ran
    points = [r["options"] for r in rows]
    assert len(points) == len({json.dumps(p, sort_keys=True) for p in points})  # one row a point
    # the table's own rate is the point that does not name it (not a second row with learner.lr 1e-4)
    assert {"strength": 1e4} in points and {"strength": 1e4, "learner.lr": 1e-4} not in points
    best = max(rows, key=lambda r: r["average_accuracy"])
    assert saved["chosen"] == best["options"] == json.loads(MAIN.read_text())["chosen"]


def test_rows_of_another_strategy_are_refused(tmp_path):
    done = _tune("--strategy", "ewc", "--grid", "strength=1e5", "--reuse", str(MAIN), "--out", str(tmp_path / "x.json"))
    assert done.returncode != 0 and "cannot join" in done.stderr


def test_several_seeds_choose_on_the_means_of_points_measured_on_every_seed(tmp_path):
    # the rate-and-strength grid of the preset, measured on validation seeds 0-2 (nothing runs here)
    probes = [str(p) for p in sorted(TUNING.glob("valid-probe-clinc150-task-finetune-online-kfac-ewc-joint-*.json"))]
    reuse = [a for p in [str(MAIN), *probes] for a in ("--reuse", p)]
    grid = ("--grid", "strength=5e3,1e4,2e4", "--grid", "learner.lr=1e-4,2e-4")
    out = tmp_path / "tuned.json"
    done = _tune("--strategy", "online-kfac-ewc", *grid, "--seeds", "0,1,2", *reuse, "--out", str(out))
    assert done.returncode == 0, done.stderr
    saved = json.loads(out.read_text())
    measured = [r for r in saved["rows"] if r["strategy"] != "naive"]
    assert saved["seeds"] == [0, 1, 2] and all("from" in r for r in measured)  # nothing ran
    rows = {(r["seed"], json.dumps(r["options"], sort_keys=True)): r for r in measured}
    means = {json.dumps(m["options"], sort_keys=True): m for m in saved["means"]}
    assert len(means) >= 6  # the whole grid, and every earlier point measured on the three seeds
    for point, m in means.items():
        assert abs(m["average_accuracy"] - sum(rows[(s, point)]["average_accuracy"] for s in (0, 1, 2)) / 3) < 1e-12
    best = max(saved["means"], key=lambda m: m["average_accuracy"])
    assert saved["chosen"] == best["options"] == json.loads(MAIN.read_text())["chosen"]
    # one seed alone can choose otherwise: what the means are for
    alone = tmp_path / "seed2.json"
    seed2 = [a for p in (MAIN, TUNING / "valid-probe-clinc150-task-finetune-online-kfac-ewc-joint-seed2.json")
             for a in ("--reuse", str(p))]
    done = _tune("--strategy", "online-kfac-ewc", *grid, "--seed", "2", *seed2, "--out", str(alone))
    assert done.returncode == 0, done.stderr
    assert json.loads(alone.read_text())["chosen"] != saved["chosen"]
