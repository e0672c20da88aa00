"""Run configs from files: `lifelong run --config FILE` (TOML, JSON, a result to re-run), flags over it."""

import json
import subprocess
import sys

import pytest

from lifelong.cli import main

BASE = ["--benchmark", "permuted-digits", "--tasks", "2", "--epochs", "1", "--hidden", "8", "--quiet"]


def lifelong(*args):
    return subprocess.run([sys.executable, "-m", "lifelong", *args], capture_output=True, text=True, timeout=300)


class Exit:
    def __init__(self, code, out, err):
        self.returncode, self.stdout, self.stderr = code, out, err


def cli(capsys, *args):
    """`lifelong ARGS` in this process (the commands tested here only resolve configs)."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    return Exit(code, *capsys.readouterr())


@pytest.fixture
def dry_run(capsys):
    def resolve(*args):
        proc = cli(capsys, "run", *args, "--dry-run", "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)
    return resolve


@pytest.fixture
def config_file(tmp_path, dry_run):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(dry_run(*BASE, "--strategy", "ewc", "--lambda", "7", "--seed", "2")))
    return path


def test_a_dry_run_saved_as_a_config_resolves_to_the_same_config(config_file, dry_run, capsys):
    assert dry_run("--config", str(config_file)) == json.loads(config_file.read_text())


def test_flags_typed_on_the_command_line_override_the_file(config_file, dry_run, capsys):
    config = dry_run("--config", str(config_file), "--epochs", "3", "--lambda", "9", "--seed", "4")
    assert config["learner"]["epochs"] == 3 and config["strategy_options"] == {"strength": 9.0, "seed": 4}
    assert config["stream"]["seed"] == 4 and config["stream"]["tasks"] == 2  # the rest is the file's
    other = dry_run("--config", str(config_file), "--strategy", "replay", "--memory", "30")
    assert other["strategy"] == "replay" and other["strategy_options"] == {"memory": 30, "seed": 2}


def test_a_toml_file_with_keys_left_out_takes_the_library_defaults(tmp_path, dry_run, capsys):
    path = tmp_path / "run.toml"
    path.write_text('strategy = "si"\nseed = 3\n[stream]\nbenchmark = "permuted-digits"\ntasks = 2\n'
                    '[learner]\nepochs = 1\n[model]\nhidden = [8]\n')
    config = dry_run("--config", str(path))
    assert (config["strategy"], config["seed"], config["model"]["hidden"]) == ("si", 3, [8])
    assert config["learner"]["batch_size"] == 128 and config["stream"]["tasks"] == 2


def test_a_result_file_reruns_to_the_identical_matrix(config_file, tmp_path):
    first = tmp_path / "first.json"
    done = lifelong("run", "--config", str(config_file), "--threads", "1", "--quiet", "--out", str(first))
    assert done.returncode == 0, done.stderr
    proc = lifelong("run", "--config", str(first), "--threads", "1", "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr
    again, before = json.loads(proc.stdout), json.loads(first.read_text())
    assert again["accuracy_matrix"] == before["accuracy_matrix"]
    assert again["strategy_config"] == before["strategy_config"]
    assert {k: v for k, v in again["config"].items() if k != "strategy_options"} == \
        {k: v for k, v in before["config"].items() if k != "strategy_options"}


def test_a_result_reruns_with_the_options_it_ran_with_not_todays_defaults(tmp_path, dry_run):
    """A result records every strategy option it ran with (`strategy_config`); one written before that
    was recorded ran with the defaults of its time (EWC's importance from the whole task)."""
    config = dry_run(*BASE, "--strategy", "ewc")
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps({"config": config, "accuracy_matrix": [[0.5]]}))
    new.write_text(json.dumps({"config": config, "accuracy_matrix": [[0.5]],
                               "strategy_config": {"ewc": {"samples": 64, "strength": 7.0}}}))
    assert dry_run("--config", str(old))["strategy_options"]["samples"] is None
    assert dry_run("--config", str(new))["strategy_options"].items() >= {"samples": 64, "strength": 7.0}.items()


def test_a_file_of_several_runs_needs_a_run_index(tmp_path, dry_run, capsys):
    runs = tmp_path / "compare.json"  # the shape of `compare --out` and the benchmark scripts
    configs = [dry_run(*BASE, "--strategy", s) for s in ("naive", "mas")]
    runs.write_text(json.dumps({"runs": [{"config": c, "accuracy_matrix": [[0.5]]} for c in configs]}))
    proc = cli(capsys, "run", "--config", str(runs), "--dry-run")
    assert proc.returncode == 2 and "holds 2 runs (0: naive seed 0, 1: mas seed 0)" in proc.stderr
    assert "--run-index" in proc.stderr
    assert dry_run("--config", str(runs), "--run-index", "1")["strategy"] == "mas"
    proc = cli(capsys, "compare", "--config", str(runs), "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [c["strategy"] for c in json.loads(proc.stdout)] == ["naive", "mas"]


def test_compare_crosses_one_configured_run_with_strategies_and_seeds(config_file, dry_run, capsys):
    proc = cli(capsys, "compare", "--config", str(config_file), "--strategies", "naive,ewc", "--seeds", "0,1",
                    "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    configs = json.loads(proc.stdout)
    assert [(c["strategy"], c["seed"]) for c in configs] == [("naive", 0), ("naive", 1), ("ewc", 0), ("ewc", 1)]
    assert configs[2]["strategy_options"]["strength"] == 7.0 and configs[0]["model"]["hidden"] == [8]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("missing.json", None, "missing.json: no such file"),
    ("bad.toml", 'strategy = \n', "bad.toml: not valid TOML"),
    ("bad.json", '{"strategy": ', "bad.json: not valid JSON"),
    ("key.json", '{"model": {"hiden": [8]}}', "unknown option 'model.hiden'; model takes dropout, hidden, kind"),
    ("type.toml", '[model]\nhidden = "8"\n', "'model.hidden' should be a list, not '8'"),
    ("seed.json", '{"seed": "0"}', "'seed' should be an integer, not '0'"),
    ("option.json", '{"strategy": "ewc", "strategy_options": {"strenth": 1}}', "takes no option(s) ['strenth']"),
    ("value.json", '{"learner": {"epochs": 0}}', "epochs and batch_size must be >= 1"),
    ("other.json", '{"merge": 1}', "neither a run config"),
])
def test_each_bad_file_exits_2_with_one_message_and_writes_nothing(tmp_path, capsys, name, text, message):
    if text is not None:
        (tmp_path / name).write_text(text)
    proc = cli(capsys, "run", "--config", str(tmp_path / name), "--out", str(tmp_path / "out.json"))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ([name] if text is not None else [])


def test_run_index_without_config_is_refused(capsys):
    proc = cli(capsys, "run", "--run-index", "0", "--dry-run")
    assert proc.returncode == 2 and "--run-index picks a run of a --config file" in proc.stderr
