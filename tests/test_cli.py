"""The command line, as a user runs it: real subprocesses, real exit codes, real JSON."""

import json
import subprocess
import sys

import pytest

BASE = ["--benchmark", "split-digits", "--epochs", "1", "--hidden", "16", "--quiet"]


def lifelong(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lifelong", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_run_json_prints_exactly_one_object_with_the_documented_keys(tmp_path):
    out = tmp_path / "r.json"
    proc = lifelong("run", *BASE, "--strategy", "ewc+replay", "--memory", "50", "--lambda", "10",
                    "--tasks", "5", "--seed", "1", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("accuracy_matrix", "average_accuracy", "average_retention", "bwt", "fwt", "forgetting", "seconds"):
        assert key in result
    assert len(result["accuracy_matrix"]) == 5
    assert result["config"]["strategy_options"] == {"memory": 50, "strength": 10.0, "seed": 1}
    assert json.loads(out.read_text())["accuracy_matrix"] == result["accuracy_matrix"]


def test_run_sets_any_strategy_option():
    proc = lifelong("run", *BASE, "--strategy", "agem", "--memory", "40", "--set", "reference_batch=16",
                    "--tasks", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["config"]["strategy_options"]["reference_batch"] == 16


def test_run_prints_a_readable_table():
    proc = lifelong("run", *BASE, "--strategy", "si", "--tasks", "5")
    assert proc.returncode == 0, proc.stderr
    assert "after \\ on" in proc.stdout and "retention" in proc.stdout


def test_compare_prints_a_markdown_table_with_mean_and_std(tmp_path):
    proc = lifelong("compare", *BASE, "--strategies", "naive,mas", "--seeds", "0,1", "--set", "mas.strength=2",
                    "--out", str(tmp_path / "c.json"))
    assert proc.returncode == 0, proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| naive") or ln.startswith("| mas")]
    assert len(rows) == 2 and "±" in rows[0]
    saved = json.loads((tmp_path / "c.json").read_text())
    assert len(saved["runs"]) == 4 and saved["runs"][2]["config"]["strategy_options"]["strength"] == 2


@pytest.mark.parametrize("args, message", [
    (["run", "--strategy", "dream"], "unknown strategy"),
    (["run", "--strategy", "naive", "--lambda", "3"], "no use for --lambda"),
    (["run", "--benchmark", "permuted-digits", "--scenario", "class"], "supports scenario"),
    (["compare", "--strategies", "ewc", "--set", "ewc.strength"], "STRATEGY.OPTION=VALUE"),
    (["run", "--strategy", "agem", "--set", "strength=3"], "agem has no option 'strength'"),
    (["run", "--epochs", "many"], "invalid int"),
])
def test_bad_arguments_exit_2_with_a_clear_message(args, message):
    proc = lifelong(*args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_missing_data_exits_1_and_names_the_fix(tmp_path):
    proc = lifelong("run", "--benchmark", "permuted-fmnist", "--data-dir", str(tmp_path), "--quiet")
    assert proc.returncode == 1
    assert "apt-get install dataset-fashion-mnist" in proc.stderr and "Traceback" not in proc.stderr


def test_help_everywhere():
    for args in (["--help"], ["run", "--help"], ["compare", "--help"]):
        proc = lifelong(*args)
        assert proc.returncode == 0 and "usage: lifelong" in proc.stdout
