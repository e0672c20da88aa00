"""benchmarks/suite.py's resume bookkeeping: which saved runs count as done, and which a resumed or
stopped benchmark keeps in its result file."""

import importlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # as the benchmark scripts import it
suite = importlib.import_module("suite")


def saved_run(strategy, seed, **options):
    config = {"strategy": strategy, "seed": seed, "strategy_options": {**options, "seed": seed},
              "learner": {"epochs": 1}}
    return {"strategy": strategy, "config": config, "average_accuracy": 0.5}


def test_a_run_is_known_by_its_configuration_not_by_the_seed_it_passed_to_the_strategy():
    a, b = saved_run("ewc", 0, strength=10), saved_run("ewc", 0, strength=10)
    b["config"]["strategy_options"]["seed"] = 123  # recorded by the strategy, not chosen by the user
    assert suite._identity(a) == suite._identity(b)
    assert suite._identity(a) != suite._identity(saved_run("ewc", 1, strength=10))
    assert suite._identity(a) != suite._identity(saved_run("ewc", 0, strength=100))


def test_finished_runs_come_from_the_result_file(tmp_path):
    assert suite._finished_runs(tmp_path / "missing.json") == {}
    runs = [saved_run("naive", 0), saved_run("ewc", 0, strength=10)]
    (tmp_path / "r.json").write_text(json.dumps({"runs": runs}))
    done = suite._finished_runs(tmp_path / "r.json")
    assert done == {suite._identity(r): r for r in runs}


def test_a_stopped_run_keeps_every_saved_run_and_a_finished_one_only_those_asked_for_now():
    ewc0, ewc1, joint0 = saved_run("ewc", 0, strength=10), saved_run("ewc", 1, strength=10), saved_run("joint", 0)
    done = {suite._identity(r): r for r in (ewc1, joint0)}
    now = [ewc0]  # this invocation ran ewc at seed 0 only

    midway = suite._with_kept(now, done, "ewc", final=False)
    assert midway == [ewc0, ewc1, joint0]  # nothing saved is lost while the benchmark may still stop

    final = suite._with_kept(now, done, "ewc", final=True)
    # ewc was asked for: its runs are this invocation's; joint was not: its saved run stays
    assert final == [ewc0, joint0]  # the strategies asked for first, then the rest


def test_a_rerun_replaces_the_saved_run_of_the_same_configuration():
    old, new = saved_run("ewc", 0, strength=10), saved_run("ewc", 0, strength=10)
    new["average_accuracy"] = 0.9
    kept = suite._with_kept([new], {suite._identity(old): old}, "ewc", final=False)
    assert kept == [new]


def _recorded(cfg):
    """What `run` records of a configuration: the seeded config and every option of the strategy."""
    from lifelong.run import seeded
    from lifelong.strategies import build_strategy, strategy_config

    cfg = seeded(cfg)
    return {"strategy": cfg.strategy, "config": cfg.to_dict(),
            "strategy_config": strategy_config(build_strategy(cfg.strategy, cfg.strategy_options))}


def test_a_saved_run_of_any_seed_is_found_by_the_configuration_that_made_it():
    from lifelong.data.streams import StreamConfig
    from lifelong.learner import LearnerConfig
    from lifelong.run import ModelConfig, RunConfig

    for seed in (0, 1, 2):
        cfg = RunConfig(StreamConfig("split-digits"), "ewc", {"strength": 10.0}, LearnerConfig(), ModelConfig(), seed)
        saved = _recorded(cfg)
        done = {suite._identity(saved): saved}
        assert suite._saved(done, cfg) is saved
        other = RunConfig(StreamConfig("split-digits"), "ewc", {"strength": 10.0}, LearnerConfig(), ModelConfig(),
                          seed + 1)
        assert suite._saved(done, other) is None


def test_a_run_saved_before_a_default_changed_is_run_again():
    """A record without `strategy_config` ran with the defaults of its time (CHANGED_DEFAULTS): EWC's
    importance over the whole task, replay's reservoir memory. Today's default run does not reuse it; a
    run that asks for the old value does."""
    from lifelong.data.streams import StreamConfig
    from lifelong.learner import LearnerConfig
    from lifelong.run import ModelConfig, RunConfig

    for strategy, old in (("ewc", {"samples": None}), ("replay", {"selection": "reservoir"})):
        cfg = RunConfig(StreamConfig("split-digits"), strategy, {}, LearnerConfig(), ModelConfig(), 0)
        saved = _recorded(cfg)
        del saved["strategy_config"]  # as runs saved before results recorded it
        done = {suite._identity(saved): saved}
        assert suite._saved(done, cfg) is None
        assert suite._saved(done, RunConfig(cfg.stream, strategy, old, cfg.learner, cfg.model, 0)) is saved
