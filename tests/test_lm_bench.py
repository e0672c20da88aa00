"""benchmarks/lm.py's bookkeeping, with no training: the facts tables (the share of earlier facts kept, from
the saved exact-match matrix), merged and resumed runs, the settings, `choose` and the LoRA rank, and the
figure. `compare` and the equal-bytes control: test_lm_compare.py."""

import argparse
import json
import math
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # as the benchmark scripts import it

import lm  # noqa: E402
import lm_jobs  # noqa: E402
import lm_methods  # noqa: E402
import lm_plan  # noqa: E402
import lm_report  # noqa: E402
import lm_results  # noqa: E402

from lifelong.data.facts import FactWorld  # noqa: E402
from lifelong.lm.run import LMRunConfig, _pretrain_key  # noqa: E402


def _run(matrix: list[list[float]]) -> dict:
    """A saved facts run: row i = exact match of every batch after learning batch i (row/column 0:
    the general mixture, which has no exact match)."""
    scores = [[{"loss": 2.0}] + [{"exact_match": v} for v in row] for row in matrix]
    return {"config": {"model": "gpt-0.2m", "options": {}}, "method": "naive", "parameters": 1, "scores": scores,
            "stored_bytes": 0, "metrics": {"average_accuracy": 0.0, "learning_accuracy": 0.0,
                                           "average_retention": 0.0, "general_loss_ratio": 1.0}}


def test_facts_kept_is_the_share_of_earlier_just_learned_answers_still_given() -> None:
    # general row, then 3 batches: just learned 0.5, 0.0, 1.0 (the last batch does not count as earlier)
    matrix = [[0, 0, 0], [0.5, 0, 0], [0.5, 0.0, 0], [0.25, 0.5, 1.0]]
    # earlier batches 1 and 2: at the end 0.25 + 0.5, just learned 0.5 + 0.0
    assert math.isclose(lm_report._facts_kept(_run(matrix)), 0.75 / 0.5)
    assert math.isnan(lm_report._facts_kept(_run([[0, 0], [0.0, 0], [0.0, 1.0]])))  # nothing learned: undefined


def test_facts_table_has_the_kept_column() -> None:
    text = lm_report.table([_run([[0, 0], [0.5, 0], [0.25, 1.0]])], facts=True)
    head, _, row = text.splitlines()
    assert "earlier facts kept" in head and "loss rise" not in head
    assert row.split(" | ")[head.split(" | ").index("earlier facts kept")] == "0.500"


def test_taught_table_sets_the_trained_question_form_beside_the_held_out_ones() -> None:
    run = _run([[0, 0, 0], [0.5, 0, 0], [0.5, 0.5, 0], [0.25, 0.5, 1.0]])
    for i, row in enumerate(run["scores"]):  # the trained form: 1.0 once learned, kept to the end
        for j, cell in enumerate(row[1:], start=1):
            if j <= i:
                cell["taught_match"] = 1.0
    text = lm_report.taught_table([run])
    # earlier batches 1 and 2: held-out learned (0.5 + 0.5) / 2 -> end (0.25 + 0.5) / 2; taught 1 -> 1
    assert text.splitlines()[-1].endswith("| 1 | 0.500 -> 0.375 | 1.000 -> 1.000 |")
    assert lm_report.taught_table([_run([[0, 0], [0.5, 0], [0.25, 1.0]])]).count("\n") == 1  # runs without it: no rows


def test_forms_table_shows_each_held_out_form_learned_and_at_the_end() -> None:
    run = _run([[0, 0, 0], [0.5, 0, 0], [0.5, 0.5, 0], [0.25, 0.5, 1.0]])
    for i, row in enumerate(run["scores"]):  # form 0 kept whole, form 1 lost at the end, form 2 never answered
        for j, cell in enumerate(row[1:], start=1):
            if j <= i:
                cell.update(held_out_0_match=1.0, held_out_1_match=0.0 if i == 3 else 1.0, held_out_2_match=0.0)
    last = lm_report.forms_table([run]).splitlines()[-1]
    assert last.endswith("| 1.000 -> 1.000 | 1.000 -> 0.000 | 0.000 -> 0.000 |")
    assert lm_report.forms_table([_run([[0, 0], [0.5, 0], [0.25, 1.0]])]).count("\n") == 1  # runs without it: no rows


def test_per_batch_table_reads_the_facts_target_batch_by_batch() -> None:
    # earlier batches 1..3 learned at 0.5, 0.0 and 1.0; at the end 0.25 (0.5 of learned), 0.5 and 1.0
    one = _run([[0, 0, 0, 0], [0.5, 0, 0, 0], [0.5, 0.0, 0, 0], [0.5, 0.0, 1.0, 0], [0.25, 0.5, 1.0, 1.0]])
    two = _run([[0, 0], [0.5, 0], [0.5, 1.0]])  # a second seed: its one earlier batch kept whole
    one["config"]["seed"], two["config"]["seed"] = 0, 1
    # batch 2 was learned at 0: no ratio, so 2 ratios on seed 0 and 1 on seed 1, one of them under 90 %.
    # Once old, batch 1 moves 0.5 -> 0.5 -> 0.25 and batch 2 0.0 -> 0.5 (rows 3 and 4): steps 0, -0.25
    # and +0.5, whose sd is 0.312; seed 1 is too short to have an old batch. The batch under 90 % went
    # 0.5 -> 0.25 with 3 batches learned after it; the others 1.0 -> 1.0 (seed 0) and 0.5 -> 0.5 (seed 1).
    assert lm_report.per_batch_table([two, one]).splitlines()[-1].endswith(
        "| 2 | 0.500, 1.000 | 1 of 3 | 0.500 -> 0.250 | 3 | 0.750 -> 0.750 | 0.312 |")


def _saved(seed: int, device: str = "cpu", method: str = "naive") -> dict:
    run = _run([[0, 0], [0.5, 0], [0.25, 1.0]])
    run["config"] = {**run["config"], "strategy": method, "seed": seed, "eval_split": "test", "data": {},
                     "device": device}
    return {**run, "method": method, "setting": "facts"}


def test_merged_runs_join_once_and_the_table_says_where_they_ran(tmp_path: Path) -> None:
    from lifelong.reporting import write_json

    out, part = tmp_path / "lm-facts.json", tmp_path / "part.json"
    write_json(out, {"runs": [_saved(0)]})
    write_json(part, {"runs": [_saved(0, "cuda"), _saved(1, "cuda"), {**_saved(2), "setting": "domains"}]})
    # seed 0 is there already; seed 2 is another setting, and is named as left out
    assert lm_jobs.merge_runs(out, "facts", "test", [part]) == (1, {"domains/test": 1})
    assert lm_jobs.merge_runs(out, "facts", "test", [part]) == (0, {"domains/test": 1})
    runs = lm_jobs.load(out)["runs"]
    assert [(r["config"]["seed"], r["config"]["device"]) for r in runs] == [(0, "cpu"), (1, "cuda")]
    assert lm_report._devices(runs) == "cpu 1, cuda 1" and lm_report._devices(runs[:1]) == "cpu"
    assert lm_report.table(runs, facts=True).splitlines()[2].endswith("| cpu 1, cuda 1 |")


def test_merge_of_another_split_says_so_and_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # A validation run merged without --split valid used to add nothing and exit 0.
    from lifelong.reporting import write_json

    out, part = tmp_path / "lm-facts-valid.json", tmp_path / "part.json"
    run = _saved(0)
    write_json(part, {"runs": [{**run, "config": {**run["config"], "eval_split": "valid"}}]})
    monkeypatch.setattr(sys, "argv", ["lm.py", "merge", "--setting", "facts", "--out", str(out), str(part)])
    assert lm.main() == 1
    assert "left out, not facts/test: 1 of facts/valid (pass --setting and --split" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["lm.py", "merge", "--setting", "facts", "--split", "valid", "--out", str(out),
                                      str(part)])
    assert lm.main() == 0
    assert len(lm_jobs.load(out)["runs"]) == 1


def test_the_untouched_model_row_is_row_0_over_the_domains() -> None:
    # row 0: after pre-training; its column 0 (the general mixture) is not a domain
    scores = [[{"loss": 2.0, "accuracy": 0.9}, {"loss": 2.0, "accuracy": 0.2}, {"loss": 2.0, "accuracy": 0.4}],
              [{"loss": 2.0, "accuracy": 0.1}, {"loss": 2.0, "accuracy": 0.8}, {"loss": 2.0, "accuracy": 0.8}]]
    run = {"config": {"model": "gpt-0.2m", "options": {}}, "parameters": 1, "metrics": {"pretrained": 1.0},
           "scores": scores}
    assert "| gpt-0.2m | 0.300 |" in lm_report.pretrained_table([run, run])


def test_facts_long_is_facts_with_twice_the_steps_and_facts_choices() -> None:
    """The more-steps variant changes only the steps on each batch (so the same pre-trained model is
    reused) and, without its own validation, takes the options chosen on facts' validation."""
    facts, long = lm_methods.SETTINGS["facts"], lm_methods.SETTINGS["facts-long"]
    assert long["data"].steps == 2 * facts["data"].steps
    assert replace(long["data"], steps=facts["data"].steps) == facts["data"]
    assert lm_methods._options("facts-long", "gpt-1m", "replay", {})[1]["select"] == "distinct"  # facts' gpt-1m choice
    # the budget is a share of every token trained on, so the same share buys more tokens
    assert lm_methods._options("facts-long", "gpt-1m", "replay", {"replay": 0.01})[1]["tokens"] > \
        lm_methods._options("facts", "gpt-1m", "replay", {"replay": 0.01})[1]["tokens"]


def test_facts_wide_reads_each_batch_on_twice_the_facts_after_the_same_pre_training() -> None:
    """The wider variant doubles the facts of a batch and the steps on it (facts-long's steps per fact);
    the background facts, and so the pre-trained model, are facts-long's."""
    long, wide = lm_methods.SETTINGS["facts-long"]["data"], lm_methods.SETTINGS["facts-wide"]["data"]
    assert (wide.steps, wide.facts.entities_per_batch) == (2 * long.steps, 2 * long.facts.entities_per_batch)
    worlds = [FactWorld(d.facts) for d in (long, wide)]
    assert worlds[0].background == worlds[1].background
    assert [len(w.batches[0]) for w in worlds] == [20, 40]
    keys = {_pretrain_key(LMRunConfig("facts", "gpt-1m", "naive", {}, d)) for d in (long, wide)}
    assert len(keys) == 1


def test_facts_wide_validates_on_facts_of_its_own_and_its_test_runs_are_unchanged() -> None:
    def config(split: str) -> LMRunConfig:
        args = argparse.Namespace(setting="facts-wide", split=split, device="cpu")
        return lm_plan.run_config(args, "gpt-1m", "naive", {}, 0)

    valid, test = config("valid"), config("test")
    assert valid.data.facts.valid_facts and not test.data.facts.valid_facts
    assert _pretrain_key(valid) == _pretrain_key(test)  # the same pre-trained model
    # a test run's saved configuration is what it was before validation had facts of its own (`--resume`)
    assert test.to_dict()["data"] == {**asdict(test.data), "facts": {
        k: v for k, v in asdict(test.data.facts).items() if k != "valid_facts"}}
    assert not lm_plan.run_config(argparse.Namespace(setting="facts-long", split="valid", device="cpu"), "gpt-1m",
                                  "naive", {}, 0).data.facts.valid_facts  # facts-long keeps its validation (form 0)


def test_set_values_are_json_numbers_lists_and_flags_else_strings() -> None:
    combos = lm_plan.parse_sets(["weight=0.3,1", "keep_generated=true", "start=word"])
    assert combos == [{"weight": 0.3, "keep_generated": True, "start": "word"},
                      {"weight": 1, "keep_generated": True, "start": "word"}]


def test_the_table_can_show_one_seed_alone(tmp_path: Path, monkeypatch, capsys) -> None:
    from lifelong.reporting import write_json

    out = tmp_path / "lm-facts.json"
    runs = [_saved(0), _saved(1)]
    runs[1]["metrics"] = {**runs[1]["metrics"], "average_accuracy": 0.5}
    write_json(out, {"runs": runs})
    monkeypatch.setattr(sys, "argv", ["lm.py", "table", "--setting", "facts", "--out", str(out), "--seeds", "1"])
    assert lm.main() == 0
    row = capsys.readouterr().out.split("\n| gpt-0.2m")[1]
    assert row.startswith(" | naive | {} | 1 | 0.500 |")  # seed 1's run alone, not the mean of both


def test_the_plasticity_floor_asks_for_half_the_baselines_gain_where_it_learns_little() -> None:
    # full fine-tuning learns far above the untouched model: 5 points below it is the binding floor
    assert lm_methods.plasticity_floor(0.442, 0.313) == pytest.approx(0.392)
    # LoRA adapters learn 0.057 above it: 5 points would let a frozen model pass; half the gain binds
    assert lm_methods.plasticity_floor(0.370, 0.313) == pytest.approx(0.3415)
    assert lm_methods.plasticity_floor(0.370, None) == pytest.approx(0.320)  # no untouched score (facts): 5 points


def test_the_lora_methods_take_the_rank_chosen_for_sequential_lora(tmp_path: Path, monkeypatch) -> None:
    from lifelong.reporting import write_json

    monkeypatch.setattr(lm_methods, "TUNING", tmp_path / "results" / "tuning")
    write_json(tmp_path / "results" / "tuning" / "lm-domains-gpt-1m-lora.json", {"chosen": {"lora": 32}})
    write_json(tmp_path / "results" / "tuning" / "lm-domains-gpt-1m-lora-ewc.json", {"chosen": {"strength": 0.1}})
    assert lm_methods._options("domains", "gpt-1m", "lora-ewc", {})[1] == {"lora": 32, "strength": 0.1, "samples": 128}
    assert lm_methods._options("domains", "gpt-1m", "olora", {})[1]["lora"] == 32
    assert lm_methods._options("domains", "gpt-4m", "lora", {})[1] == {"lora": 32}  # a larger size takes gpt-1m's
    assert lm_methods._options("domains", "gpt-0.2m", "lora", {})[1] == {"lora": 8}  # none at or below: the default


def test_choose_holds_the_lora_rank_and_asks_the_adapters_to_learn(tmp_path: Path, monkeypatch) -> None:
    from lifelong.reporting import write_json

    for module in (lm_plan, lm_results):  # the validation runs' file; choose writes and reads tuning here:
        monkeypatch.setattr(module, "ROOT", tmp_path)
    for module in (lm_results, lm_methods):
        monkeypatch.setattr(module, "TUNING", tmp_path / "results" / "tuning")
    valid = argparse.Namespace(setting="domains", split="valid", device="cpu")

    def run(method: str, strategy: str, options: dict, final: float, learning: float) -> dict:
        row0 = [{"loss": 2.0, "accuracy": 0.3}] + [{"loss": 2.0, "accuracy": 0.31}] * 4  # untouched: 0.31
        return {"config": lm_plan.run_config(valid, "gpt-1m", strategy, options, 0).to_dict(), "method": method,
                "scores": [row0], "metrics": {"pretrained": True, "average_accuracy": final,
                                              "learning_accuracy": learning, "average_retention": 1.0,
                                              "general_loss_ratio": 1.0}}

    write_json(tmp_path / "results" / "lm-domains-valid.json", {"runs": [
        run("naive", "naive", {}, 0.28, 0.44),
        run("lora", "naive", {"lora": 8}, 0.30, 0.33),  # ends higher, but learns under naive's - 0.05
        run("lora", "naive", {"lora": 64}, 0.25, 0.40),
        run("lora-ewc", "ewc", {"lora": 8, "strength": 1, "samples": 128}, 0.40, 0.33),  # another LoRA model
        run("lora-ewc", "ewc", {"lora": 64, "strength": 1, "samples": 128}, 0.35, 0.32),  # keeps what it never learned
        run("lora-ewc", "ewc", {"lora": 64, "strength": 0.1, "samples": 128}, 0.30, 0.38)]})
    for method in ("lora", "lora-ewc"):
        monkeypatch.setattr(sys, "argv", ["lm.py", "choose", "--setting", "domains", "--method", method,
                                          "--sizes", "gpt-1m"])
        assert lm.main() == 0
    tuning = tmp_path / "results" / "tuning"
    assert json.loads((tuning / "lm-domains-gpt-1m-lora.json").read_text())["chosen"] == {"lora": 64}
    chosen = json.loads((tuning / "lm-domains-gpt-1m-lora-ewc.json").read_text())
    assert chosen["fixed"] == {"lora": 64} and chosen["chosen"] == {"strength": 0.1}  # floor 0.355, not 0.35


def test_the_scaling_figure_takes_each_method_at_its_configured_options_alone(tmp_path: Path, monkeypatch) -> None:
    from lifelong.reporting import write_json

    monkeypatch.setattr(lm_methods, "TUNING", tmp_path / "results" / "tuning")
    write_json(tmp_path / "results" / "tuning" / "lm-domains-gpt-1m-lora.json", {"chosen": {"lora": 64}})
    args = argparse.Namespace(setting="domains", split="test", device="cpu")

    def run(size: str, method: str, strategy: str, options: dict, seed: int = 0) -> dict:
        return {"config": lm_plan.run_config(args, size, strategy, options, seed).to_dict(), "method": method}

    runs = [run("gpt-1m", "lora", "naive", {"lora": rank}, seed) for rank in (8, 64) for seed in (0, 1)]
    runs += [run("gpt-1m", "naive", "naive", {}), run("gpt-1m", "replay@lora-ewc", "token-replay", {"tokens": 9})]
    runs += [run("gpt-16m", "ewc+replay", "ewc+token-replay", {"strength": 100.0, "samples": 128, "tokens": 24768})]
    runs += [run("gpt-16m", "lora-fold", "olora", {"lora": 8, "mode": "loss", "orth_weight": 0.0})]
    small = lm_methods._options("domains", "gpt-0.2m", "ewc+replay", {})[1]
    runs += [run("gpt-0.2m", "ewc+replay", "ewc+token-replay", small)]
    configured = lm_plan.configured_runs("domains", runs)
    assert [(r["config"]["model"], r["method"], r["config"]["lora_rank"]) for r in configured] == [
        ("gpt-1m", "lora", 64), ("gpt-1m", "lora", 64), ("gpt-1m", "naive", 0), ("gpt-0.2m", "ewc+replay", 0)]
    # gpt-16m's EWC + replay ran only before validation (another strength): drawn apart, not pooled; lora-fold
    # has no configured run anywhere, so no line to stand beside
    assert [(r["config"]["model"], r["method"]) for r in lm_results.runs_at_other_options(runs, configured)] == [
        ("gpt-16m", "ewc+replay")]


def test_the_figure_draws_a_size_from_one_device_when_told_where_its_runs_are() -> None:
    args = argparse.Namespace(setting="domains", split="test", device="cpu")

    def run(size: str, seed: int, device: str) -> dict:
        config = lm_plan.run_config(args, size, "naive", {}, seed).to_dict()
        return {"config": {**config, "device": device}, "method": "naive"}

    gpu = [run("gpt-16m", seed, "cuda") for seed in (0, 1, 2)] + [run("gpt-4m", 0, "cuda")]
    cpu = [run("gpt-16m", seed, "cpu") for seed in (0, 1)]
    merged = lm_results.replace_runs(gpu, cpu)
    assert sorted((r["config"]["model"], r["config"]["seed"], r["config"]["device"]) for r in merged) == [
        ("gpt-16m", 0, "cpu"), ("gpt-16m", 1, "cpu"), ("gpt-16m", 2, "cuda"), ("gpt-4m", 0, "cuda")]


def test_resume_skips_a_run_that_another_process_finished_meanwhile(tmp_path: Path, monkeypatch) -> None:
    from lifelong.reporting import write_json

    out = tmp_path / "lm-domains.json"
    write_json(out, {"runs": []})
    ran: list[int] = []

    def run_lm(config: LMRunConfig, log=None) -> dict:  # a stand-in: the real one trains for minutes
        ran.append(config.seed)
        result = {"config": config.to_dict(), "stored_bytes": 0, "seconds": 1.0, "metrics": {
            "average_accuracy": 0.3, "learning_accuracy": 0.4, "average_retention": 0.7, "general_loss_ratio": 1.1}}
        if config.seed == 0:  # meanwhile a second command, sharing the file, finished seed 1
            other = {**result, "config": replace(config, seed=1).to_dict(), "method": "naive"}
            write_json(out, {"runs": json.loads(out.read_text())["runs"] + [other]})
        return result

    monkeypatch.setattr(lm, "run_lm", run_lm)
    monkeypatch.setattr(sys, "argv", ["lm.py", "run", "--setting", "domains", "--sizes", "gpt-0.2m", "--methods",
                                      "naive", "--seeds", "0,1", "--out", str(out), "--resume"])
    assert lm.main() == 0
    assert ran == [0]  # seed 1 was not trained again
    assert sorted(r["config"]["seed"] for r in json.loads(out.read_text())["runs"]) == [0, 1]


def test_jobs_start_only_what_is_still_missing_and_not_running_elsewhere(tmp_path: Path, monkeypatch) -> None:
    import fcntl

    from lifelong.reporting import write_json

    out, parts = tmp_path / "lm-domains.json", tmp_path / "lm-domains.json.parts"
    parts.mkdir()
    write_json(out, {"runs": []})
    config = LMRunConfig(model="gpt-0.2m", strategy="naive").to_dict()

    def job(name: str, seed: int, wanted: bool) -> tuple[str, list[str], object]:
        run = {"config": {**config, "seed": seed}, "method": "naive", "setting": "domains"}
        write = f"import json, sys; json.dump({{'runs': [{run!r}]}}, open(sys.argv[1], 'w'))"
        return name, [sys.executable, "-c", write, str(parts / f"{name}.json")], lambda: wanted

    with open(parts / "elsewhere.claim", "w") as held:  # another command is running this job now
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        queue = [job("missing", 0, True), job("done-meanwhile", 1, False), job("elsewhere", 2, True)]
        assert lm_jobs.run_processes(queue, 2, parts, out, "domains", "test") == 0
    assert [r["config"]["seed"] for r in json.loads(out.read_text())["runs"]] == [0]
    assert sorted(p.name for p in parts.glob("*.log")) == ["missing.log"]  # the other's log is left alone

    # run --jobs asks the result file again as each job starts, not only when it queues them
    queued: list = []
    monkeypatch.setattr(lm, "run_processes", lambda queue, *a: queued.extend(queue) or 0)
    monkeypatch.setattr(sys, "argv", ["lm.py", "run", "--setting", "domains", "--sizes", "gpt-0.2m", "--methods",
                                      "naive", "--seeds", "3", "--out", str(out), "--resume", "--jobs", "2"])
    assert lm.main() == 0
    ((name, _, wanted),) = queued
    assert name == "gpt-0.2m-naive-s3"
    assert wanted()
    args = argparse.Namespace(setting="domains", split="test", device="cpu")
    planned = {"config": lm_plan.run_config(args, "gpt-0.2m", "naive", {}, 3).to_dict(), "method": "naive"}
    write_json(out, {"runs": json.loads(out.read_text())["runs"] + [planned]})
    assert not wanted()


def test_resume_says_when_the_run_it_skips_started_from_other_weights(tmp_path: Path, monkeypatch, capsys) -> None:
    import torch

    from lifelong.lm.run import pretrain_cache_path, weights_fingerprint
    from lifelong.models.gpt import GPT, gpt_config
    from lifelong.reporting import write_json

    monkeypatch.setattr(lm_plan, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(lm, "_STARTS", {})
    args = argparse.Namespace(setting="domains", split="test", device="cpu")
    config = lm_plan.run_config(args, "gpt-0.2m", "naive", {}, 0)
    model = GPT(gpt_config("gpt-0.2m", block_size=config.data.length))  # this machine's cached start
    path = pretrain_cache_path(config)
    path.parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "seconds": 1.0}, path)
    mine = weights_fingerprint(model)

    out = tmp_path / "lm-domains.json"
    monkeypatch.setattr(lm, "run_lm", lambda *a, **k: pytest.fail("a saved run was trained again"))
    monkeypatch.setattr(sys, "argv", ["lm.py", "run", "--setting", "domains", "--sizes", "gpt-0.2m", "--methods",
                                      "naive", "--seeds", "0", "--out", str(out), "--resume"])
    for weights, said in (("0123456789abcdef", True), (mine, False)):  # from a GPU's pre-training; from this one
        write_json(out, {"runs": [{"config": config.to_dict(), "method": "naive", "pretrain": {"weights": weights}}]})
        assert lm.main() == 0
        err = capsys.readouterr().err
        assert ("skipped, done from other pre-trained weights (0123456789abcdef)" in err) is said
        assert (f"than this machine's ({mine})" in err) is said
    # a GPU's run from before runs recorded their weights: said as possibly another start; a CPU one is not,
    # nor a GPU one beside a CPU one (that one may be this start, and `compare` pairs it)
    for devices, said in ((["cuda"], True), (["cpu"], False), (["cuda", "cpu"], False)):
        write_json(out, {"runs": [{"config": {**config.to_dict(), "device": d}, "method": "naive"} for d in devices]})
        assert lm.main() == 0
        err = capsys.readouterr().err
        assert ("skipped, done on cuda before runs recorded their pre-trained weights" in err) is said


def test_run_says_when_this_cpu_would_not_reproduce_the_files_intel_runs(monkeypatch) -> None:
    """MKL takes other kernels on an AMD CPU: a model pre-trained there does not pair with Intel runs."""
    runs = [{"config": {"device": "cpu"}, "environment": {"cpu": "Intel(R) Xeon(R) Processor"}},
            {"config": {"device": "cuda"}, "environment": {"cpu": "AMD EPYC"}}]
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(lm, "cpu_vendor", lambda: "AuthenticAMD")
    note = lm._vendor_note(runs, "cpu")
    assert note and "AuthenticAMD" in note and "1 runs" in note and "scripts/mkl-intel-path.sh" in note
    assert lm._vendor_note(runs, "cuda") is None  # a GPU run's products are not MKL's
    assert lm._vendor_note(runs[1:], "cpu") is None  # no Intel CPU run to pair with
    monkeypatch.setenv("LD_PRELOAD", "/root/.cache/lifelong/libmkl-intel-path.so")
    assert lm._vendor_note(runs, "cpu") is None  # already steered
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.setattr(lm, "cpu_vendor", lambda: "GenuineIntel")
    assert lm._vendor_note(runs, "cpu") is None
