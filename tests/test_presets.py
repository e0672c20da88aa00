"""Each benchmark's defaults are the regime of its README table: the presets match the options chosen
on validation (results/tuning/), and `lifelong run` with no flags runs exactly the benchmark scripts'
configuration."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lifelong.presets import PRESETS, preset_for

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_every_preset_option_is_the_one_chosen_on_validation():
    checked = 0
    for preset in PRESETS.values():
        for path in sorted((ROOT / "results" / "tuning").glob(f"{preset.tuning}-*.json")) if preset.tuning else []:
            strategy = path.stem.removeprefix(f"{preset.tuning}-")
            chosen = json.loads(path.read_text()).get("chosen")
            if chosen is None:  # naive's file: the floor of the rule, not a choice
                continue
            learner = {k.removeprefix("learner."): v for k, v in chosen.items() if k.startswith("learner.")}
            # the preset's budget sets memory; `learner.` keys are the strategy's training regime
            options = {k: v for k, v in chosen.items() if k != "memory" and not k.startswith("learner.")}
            assert preset.options.get(strategy, {}) == pytest.approx(options), (preset.key, strategy)
            assert preset.learners.get(strategy, {}) == learner, (preset.key, strategy)
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("module, setting, cli", [
    ("vision", "permuted", ["--benchmark", "permuted-fmnist"]),
    ("vision", "split-task", ["--benchmark", "split-fmnist"]),
    ("class_il", "split-fmnist-fixed", ["--benchmark", "split-fmnist", "--scenario", "class"]),
    ("language", "frozen-task", ["--benchmark", "clinc150"]),
    ("language", "finetune-class", ["--benchmark", "clinc150", "--encoder", "finetune", "--scenario", "class"]),
    ("control", "lander-rewired", ["--benchmark", "control", "--environments", "lander-rewired"]),
])
@pytest.mark.parametrize("strategy", ["ewc", "replay", "agem"])
def test_run_with_no_flags_runs_the_benchmark_scripts_configuration(module, setting, cli, strategy):
    import importlib

    from suite import tuned_options

    from lifelong.run import RunConfig, seeded

    chosen = importlib.import_module(module).SETTINGS[setting]
    options, _ = tuned_options(chosen, strategy)
    expected = seeded(RunConfig(chosen.stream, strategy, options, chosen.learner_for(strategy), chosen.model, 2,
                                mode=chosen.mode, rl_steps=chosen.rl_steps)).to_dict()
    out = subprocess.run([sys.executable, "-m", "lifelong", "run", *cli, "--strategy", strategy, "--seed", "2",
                          "--dry-run", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == json.loads(json.dumps(expected))


def test_a_run_says_which_preset_it_uses_and_flags_override_it(capsys):
    from lifelong.cli import main

    assert main(["run", "--benchmark", "permuted-fmnist", "--strategy", "ewc", "--epochs", "1", "--lambda", "3",
                 "--dry-run", "--json"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["learner"]["epochs"] == 1 and config["model"]["dropout"] == 0.3  # a flag, then the preset
    assert config["strategy_options"]["strength"] == 3
    assert main(["run", "--benchmark", "permuted-fmnist", "--no-preset", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["learner"]["epochs"] == 1
    assert preset_for("split-digits") is None  # no README table: the library defaults
    assert "preset 'permuted-fmnist'" in PRESETS["permuted-fmnist"].describe("ewc")


def test_agem_trains_with_sgd_by_default():
    from lifelong.learner import LearnerConfig
    from lifelong.strategies import build_strategy

    assert LearnerConfig().resolve(build_strategy("agem")).optimizer == "sgd"
    assert LearnerConfig().resolve(build_strategy("ewc+replay")).optimizer == "adam"
    assert LearnerConfig(optimizer="adam").resolve(build_strategy("agem")).optimizer == "adam"  # asked for
