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
    # a seed-1 file made from seed 0's rows (relabelled, one point shifted) stands in for a second seed's
    # tuning: the choice must average the two and ignore the points seed 1 lacks
    main = json.loads(MAIN.read_text())
    other = {**main, "seed": 1, "rows": [{**r, "average_accuracy": r["average_accuracy"] - (0.2 if r["options"] ==
                                          {"strength": 1e4} else 0.0)} for r in main["rows"]
                                         if r["strategy"] == "naive" or r["options"] in ({"strength": 1e4},
                                                                                         {"strength": 3e4})]}
    second = tmp_path / "seed1.json"
    second.write_text(json.dumps(other))
    out = tmp_path / "tuned.json"  # naive's seed-1 floor is its real validation run (results/tuning)
    done = _tune("--strategy", "online-kfac-ewc", "--grid", "strength=1e4,3e4", "--grid", "learner.lr=1e-4",
                 "--seeds", "0,1", "--reuse", str(MAIN), "--reuse", str(second), "--out", str(out))
    assert done.returncode == 0, done.stderr
    saved = json.loads(out.read_text())
    assert saved["seeds"] == [0, 1] and all("from" in r for r in saved["rows"] if r["strategy"] != "naive")
    means = {json.dumps(m["options"], sort_keys=True): m for m in saved["means"]}
    assert set(means) == {json.dumps({"strength": 1e4}), json.dumps({"strength": 3e4})}
    rows = {(r["seed"], json.dumps(r["options"], sort_keys=True)): r for r in saved["rows"]}
    for point, m in means.items():
        assert abs(m["average_accuracy"] - (rows[(0, point)]["average_accuracy"] +
                                            rows[(1, point)]["average_accuracy"]) / 2) < 1e-12
    # seed 0 alone chose 1e4; seed 1's 0.2 drop there moves the mean choice to 3e4
    assert saved["chosen"] == {"strength": 3e4}
