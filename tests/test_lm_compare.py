"""benchmarks/lm.py compare and the equal-bytes control: runs paired by seed and start, each method with the
replay given its stored bytes, one control for every method that stores more than the whole text, and the
per-seed gains the docs quote, read from the committed runs."""

import argparse
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # as the benchmark scripts import it

import lm  # noqa: E402
import lm_compare  # noqa: E402
import lm_jobs  # noqa: E402
import lm_methods  # noqa: E402
import lm_plan  # noqa: E402
import lm_report  # noqa: E402

from lifelong.lm.run import LMRunConfig  # noqa: E402


def test_the_equal_bytes_control_takes_the_bytes_of_the_run_with_the_same_options() -> None:
    args = argparse.Namespace(setting="domains", split="test", device="cpu")
    runs = [{"config": lm_plan.run_config(args, "gpt-1m", "ewc", {"lora": rank, "strength": 1}, 0).to_dict(),
             "method": "lora-ewc", "stored_bytes": stored} for rank, stored in ((8, 136_128), (64, 1_053_632))]
    control = lm._equal_bytes_options(args, "gpt-1m", 0, "ewc", {"lora": 64, "strength": 1}, runs)
    assert control == {"tokens": 1_053_632, "lora": 64}  # not the first lora-ewc run of the seed (rank 8)
    assert lm._equal_bytes_options(args, "gpt-1m", 1, "ewc", {"lora": 64, "strength": 1}, runs) is None


def _domains_run(size: str, method: str, strategy: str, options: dict, seed: int, accuracy: float,
                 device: str = "cpu", stored: int = 0, before: float = 3.0) -> dict:
    args = argparse.Namespace(setting="domains", split="test", device="cpu")
    config = {**lm_plan.run_config(args, size, strategy, options, seed).to_dict(), "device": device}
    return {"config": config, "method": method, "stored_bytes": stored, "metrics": {"average_accuracy": accuracy},
            "scores": [[{"loss": before}]]}  # row 0: the pre-trained model, before the first domain


def test_compare_pairs_runs_by_seed_at_configured_or_named_options(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(lm_methods, "TUNING", tmp_path / "tuning")  # nothing tuned: the defaults are configured
    ewc = lm_methods._options("domains", "gpt-1m", "ewc", {})[1]
    runs = [_domains_run("gpt-1m", "ewc", "ewc", ewc, s, 0.30 + s / 100, stored=100) for s in (0, 1, 2)]
    runs += [_domains_run("gpt-1m", "ewc", "ewc", {**ewc, "strength": 7}, s, 0.9) for s in (0, 1)]  # other options
    runs += [_domains_run("gpt-1m", "replay@ewc", "token-replay", {"tokens": 100}, s, 0.32, before=3.0 + s)
             for s in (0, 1)]  # seed 1's control started from another pre-trained model
    runs += [_domains_run("gpt-1m", "replay@ewc", "token-replay", {"tokens": 55}, 2, 0.99)]  # another run's bytes
    configured = lm_plan.configured_runs("domains", runs)
    [row] = lm_compare.compare(runs, configured, "ewc", "equal-bytes")
    assert row["seeds"] == [0, 1, 2] and [round(d, 3) for d in row["differences"][:2]] == [-0.02, -0.01]
    assert row["differences"][2] is None and (row["ahead"], row["paired"]) == (0, 2)  # seed 2 has no control
    assert "| 0, 1, 2 | -0.020, -0.010, n/a | -0.015 | 0 of 2 | 1 of 2 |" in lm_compare.markdown([row])
    [named] = lm_compare.compare(runs, configured, "ewc:strength=7", "replay@ewc:tokens=100")
    assert [round(d, 3) for d in named["differences"]] == [0.58, 0.58] and named["ahead"] == 2
    on_gpu = _domains_run("gpt-1m", "ewc", "ewc", ewc, 0, 0.5, device="cuda")
    with pytest.raises(SystemExit, match="more than one run"):  # seed 0 on two devices, neither named
        lm_compare.compare([*runs, on_gpu], [*configured, on_gpu], "ewc", "equal-bytes")
    with pytest.raises(SystemExit, match="METHOD:OPTION=VALUE"):
        lm_compare.compare(runs, configured, "ewc:strength", "equal-bytes")
    # seed 1's control also run from the ewc run's start (another file): that one pairs, not the other
    rerun = _domains_run("gpt-1m", "replay@ewc", "token-replay", {"tokens": 100}, 1, 0.25)
    [row] = lm_compare.compare([*runs, rerun], configured, "ewc", "equal-bytes")
    assert [round(d, 3) for d in row["differences"][:2]] == [-0.02, 0.06] and row["same_start"] == 2
    [row] = lm_compare.compare([*runs, rerun], configured, "ewc", "replay@ewc:tokens=100")
    assert [round(d, 3) for d in row["differences"][:2]] == [-0.02, 0.06] and row["same_start"] == 2
    # the same control with more replayed windows a step: naming tokens alone is two runs; `=null` is the default
    more = [_domains_run("gpt-1m", "replay@ewc", "token-replay", {"tokens": 100, "replay_batch": 21}, s, 0.4)
            for s in (0, 1)]
    with pytest.raises(SystemExit, match="more than one run"):
        lm_compare.compare([*runs, *more], configured, "ewc", "replay@ewc:tokens=100")
    [row] = lm_compare.compare([*runs, *more], configured, "ewc", "replay@ewc:tokens=100:replay_batch=null")
    assert [round(d, 3) for d in row["differences"][:2]] == [-0.02, -0.01]
    [row] = lm_compare.compare([*runs, *more], configured, "ewc", "replay@ewc:replay_batch=21")
    assert [round(d, 3) for d in row["differences"][:2]] == [-0.1, -0.09]


def test_every_method_storing_more_than_the_text_shares_one_equal_bytes_control(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(lm_methods, "TUNING", tmp_path / "tuning")  # nothing tuned: the defaults are configured
    args = argparse.Namespace(setting="domains", split="test", device="cpu", equal_bytes=True)
    everything = 6_192_000  # replay keeps every window of the run: 5 tasks of at most 9,600 windows of 129 bytes
    assert lm_plan.keep_all_tokens(lm_plan.run_config(args, "gpt-1m", "naive", {}, 0)) == everything
    lora_ewc, olora = (lm_methods._options("domains", "gpt-1m", m, {"lora": 64}) for m in ("lora-ewc", "olora"))
    runs = [_domains_run("gpt-1m", "lora-ewc", *lora_ewc, 0, 0.20, stored=25_170_880),
            _domains_run("gpt-1m", "olora", *olora, 0, 0.25, stored=28_133_376),
            # lora-ewc's control, saved when a control's budget was the method's whole stored bytes
            _domains_run("gpt-1m", "replay@lora-ewc", "token-replay", {"tokens": 25_170_880, "lora": 64}, 0, 0.34)]
    assert lm._equal_bytes_options(args, "gpt-1m", 0, *olora, runs) == {"tokens": everything, "lora": 64}
    assert not lm._missing(args, "gpt-1m", 0, "olora", *olora, runs)  # so `run --resume` does not train it again
    [row] = lm_compare.compare(runs, runs, "olora", "equal-bytes")
    assert [round(d, 3) for d in row["differences"]] == [-0.09]
    # a method's own control comes first; another method's stands in only from the same pre-trained model
    own = _domains_run("gpt-1m", "replay@olora", "token-replay", {"tokens": everything, "lora": 64}, 0, 0.35)
    assert [round(d, 3) for d in lm_compare.compare([*runs, own], runs, "olora", "equal-bytes")[0]["differences"]] \
        == [-0.1]
    runs[2]["scores"] = [[{"loss": 2.5}]]  # another start
    assert lm_compare.compare(runs, runs, "olora", "equal-bytes")[0]["differences"] == [None]
    assert lm._missing(args, "gpt-1m", 0, "olora", *olora, runs[:2])  # with no control at all, it is to run


def test_every_committed_run_configuration_reads_back() -> None:
    for path in sorted((ROOT / "results").glob("lm-*.json")):
        for run in json.loads(path.read_text()).get("runs", []):
            config = LMRunConfig.from_dict(run["config"])
            assert lm_jobs.run_key({"config": config.to_dict()}) == lm_jobs.run_key(run), path.name


RESULTS = ROOT / "results"
PRETRAIN2 = str(RESULTS / "lm-domains-gpt-16m-cpu-pretrain2.json")  # gpt-16m's CPU runs from its second start
SEED3 = str(RESULTS / "lm-domains-gpt-16m-cpu-seed3.json")  # a fourth test seed of one comparison, from that start


def _compare(monkeypatch, capsys, *args: str) -> str:
    """What `lm.py compare --sizes gpt-16m ARGS` prints on the committed results."""
    monkeypatch.setattr(sys, "argv", ["lm.py", "compare", "--sizes", "gpt-16m", *args])
    assert lm.main() == 0
    return capsys.readouterr().out


def test_compare_prints_the_per_seed_gains_the_docs_quote_from_the_committed_runs(monkeypatch, capsys) -> None:
    out = _compare(monkeypatch, capsys, "--device", "cpu", "--also", str(RESULTS / "lm-domains-gpt-16m-cpu.json"),
                   "--against", "replay:tokens=247680000", "distill+replay", "ewc+replay")
    # docs/language-models.md, "gpt-16m on the CPU"
    assert "| -0.042, -0.050, -0.047 | -0.046 | 0 of 3 |" in out and "| -0.053, -0.051, -0.056 |" in out
    # the control ran after gpt-16m's pre-training was redone (one thread, not two): another start model
    assert out.count("| 0 of 3 | 0 of 3 |") == 2
    # the methods ran again from the control's start (their own file): every pair shares it, and 1 % replay,
    # in both files, pairs with the run from the same start
    out = _compare(monkeypatch, capsys, "--device", "cpu", "--out", PRETRAIN2, "--also",
                   str(RESULTS / "lm-domains-gpt-16m-cpu.json"), "--against", "replay:tokens=247680000", "ewc+replay")
    assert "| -0.045, -0.051, -0.056 | -0.051 | 0 of 3 | 3 of 3 |" in out
    out = _compare(monkeypatch, capsys, "--device", "cpu", "--out", PRETRAIN2, "--also",
                   str(RESULTS / "lm-domains.json"), "--against", "replay", "online-kfac-ewc+replay")
    assert "| +0.010, +0.001, +0.023 | +0.011 | 3 of 3 | 3 of 3 |" in out

    # docs/lm-equal-bytes.md, "gpt-16m: the compute-matched control": 37 replayed windows a step against the
    # teacher on top of all the text, and against 32
    out = _compare(monkeypatch, capsys, "--out", PRETRAIN2, "--against", "replay:tokens=6192000:replay_batch=21",
                   "distill+replay:tokens=6192000:weight=0.1", "replay:tokens=6192000:replay_batch=null")
    assert "| -0.002, -0.031, -0.025 | -0.019 | 0 of 3 | 3 of 3 |" in out
    assert "| -0.012, -0.019, -0.032 | -0.021 | 0 of 3 | 3 of 3 |" in out
    # "gpt-16m: 48 windows a step on the test seeds": 48 (32 replayed) against 37, the teacher at 0.1 and 32
    out = _compare(monkeypatch, capsys, "--out", PRETRAIN2, "--against", "replay:tokens=6192000:replay_batch=32",
                   "replay:tokens=6192000:replay_batch=21", "distill+replay:tokens=6192000:weight=0.1",
                   "replay:tokens=6192000:replay_batch=null")
    assert "| -0.034, -0.020, -0.022 | -0.025 | 0 of 3 | 3 of 3 |" in out
    assert "| -0.035, -0.051, -0.047 | -0.045 | 0 of 3 | 3 of 3 |" in out
    assert "| -0.046, -0.039, -0.054 | -0.046 | 0 of 3 | 3 of 3 |" in out


def test_compare_prints_the_validation_doses_the_docs_quote(monkeypatch, capsys) -> None:
    # docs/lm-equal-bytes.md, the dose on validation seed 0: at 64 windows a step the teacher at 0.1 against
    # replay alone at that dose, and replay at 48 windows against 64
    out = _compare(monkeypatch, capsys, "--split", "valid", "--against", "replay:tokens=6192000:replay_batch=48",
                   "distill+replay:tokens=6192000:weight=0.1:replay_batch=48", "replay:tokens=6192000:replay_batch=32")
    assert "| -0.008 | -0.008 | 0 of 1 | 1 of 1 |" in out
    assert "| -0.015 | -0.015 | 0 of 1 | 1 of 1 |" in out
    # "gpt-16m: EWC on top of all the text at 64 windows a step (validation)" and, against the same replay,
    # "gpt-16m: online Kronecker EWC on top of all the text at 64 windows a step (validation)"
    out = _compare(monkeypatch, capsys, "--split", "valid", "--against", "replay:tokens=6192000:replay_batch=48",
                   "ewc+replay:tokens=6192000:replay_batch=48:strength=0.01",
                   "ewc+replay:tokens=6192000:replay_batch=48:strength=0.003",
                   "ewc+replay:tokens=6192000:replay_batch=48:strength=0.03",
                   "online-kfac-ewc+replay:tokens=6192000:replay_batch=48:strength=0.03",
                   "online-kfac-ewc+replay:tokens=6192000:replay_batch=48:strength=0.1",
                   "online-kfac-ewc+replay:tokens=6192000:replay_batch=48:strength=0.01")
    assert "| +0.006 | +0.006 | 1 of 1 | 1 of 1 |" in out
    assert "| +0.002 | +0.002 | 1 of 1 | 1 of 1 |" in out
    assert ("| ewc+replay:tokens=6192000:replay_batch=48:strength=0.03 | replay:tokens=6192000:replay_batch=48 "
            "| average_accuracy | cpu / cpu | 0 | -0.015 |") in out
    assert "| -0.003 | -0.003 | 0 of 1 | 1 of 1 |" in out
    assert "| -0.019 | -0.019 | 0 of 1 | 1 of 1 |" in out
    assert "| -0.074 | -0.074 | 0 of 1 | 1 of 1 |" in out
    # "gpt-16m: a weaker EWC at 96 windows a step (validation)"
    out = _compare(monkeypatch, capsys, "--split", "valid", "--against", "replay:tokens=6192000:replay_batch=80",
                   "ewc+replay:tokens=6192000:replay_batch=80:strength=0.003",
                   "ewc+replay:tokens=6192000:replay_batch=80:strength=0.001",
                   "replay:tokens=6192000:replay_batch=48")
    assert "| +0.011 | +0.011 | 1 of 1 | 1 of 1 |" in out
    assert "| -0.005 | -0.005 | 0 of 1 | 1 of 1 |" in out
    assert "| -0.026 | -0.026 | 0 of 1 | 1 of 1 |" in out
    # "gpt-16m: 64 windows a step on the test seeds": the 3 seeds against 48 windows and the teacher
    out = _compare(monkeypatch, capsys, "--out", PRETRAIN2, "--against", "replay:tokens=6192000:replay_batch=48",
                   "replay:tokens=6192000:replay_batch=32", "distill+replay:tokens=6192000:weight=0.1",
                   "distill+replay:tokens=6192000:weight=0.03")
    assert "| -0.019, -0.013, -0.013 | -0.015 | 0 of 3 | 3 of 3 |" in out
    assert "| -0.054, -0.065, -0.061 | -0.060 | 0 of 3 | 3 of 3 |" in out
    assert "| -0.062, -0.051, -0.066 | -0.060 | 0 of 3 | 3 of 3 |" in out
    # "gpt-16m: EWC on top of all the text at 64 windows a step on the test seeds"
    out = _compare(monkeypatch, capsys, "--out", PRETRAIN2, "--against", "replay:tokens=6192000:replay_batch=48",
                   "ewc+replay:tokens=6192000:replay_batch=48:strength=0.01")
    assert "| +0.000, +0.005, +0.006 | +0.004 | 3 of 3 | 3 of 3 |" in out
    # "a fourth test seed for EWC on top of all the text at 64 windows a step": its own file, joined by --also
    out = _compare(monkeypatch, capsys, "--out", PRETRAIN2, "--also", SEED3, "--against",
                   "replay:tokens=6192000:replay_batch=48", "ewc+replay:tokens=6192000:replay_batch=48:strength=0.01")
    assert "| 0, 1, 2, 3 | +0.000, +0.005, +0.006, -0.003 | +0.002 | 3 of 4 | 4 of 4 |" in out
    # "gpt-16m: replay alone at 74 windows a step" (run as the compute-matched control for a cost that was load)
    out = _compare(monkeypatch, capsys, "--out", PRETRAIN2, "--against", "replay:tokens=6192000:replay_batch=58",
                   "ewc+replay:tokens=6192000:replay_batch=48:strength=0.01", "replay:tokens=6192000:replay_batch=48")
    assert "| -0.013, -0.012, -0.013 | -0.013 | 0 of 3 | 3 of 3 |" in out
    assert "| -0.014, -0.017, -0.018 | -0.016 | 0 of 3 | 3 of 3 |" in out
    # "gpt-16m: 96 windows a step, replay alone and EWC on top side by side" (test seeds 0, 1 and 2), and
    # "a weaker EWC at 96 windows a step on the test seeds" (seeds 0, 1 and 2 at 0.003)
    out = _compare(monkeypatch, capsys, "--out", PRETRAIN2, "--against", "replay:tokens=6192000:replay_batch=80",
                   "ewc+replay:tokens=6192000:replay_batch=80:strength=0.01", "replay:tokens=6192000:replay_batch=58",
                   "replay:tokens=6192000:replay_batch=48", "ewc+replay:tokens=6192000:replay_batch=48:strength=0.01",
                   "ewc+replay:tokens=6192000:replay_batch=80:strength=0.003")
    assert "| 0, 1, 2 | -0.009, -0.016, -0.011 | -0.012 | 0 of 3 | 3 of 3 |" in out
    assert "| 0, 1, 2 | -0.008, -0.020, -0.020 | -0.016 | 0 of 3 | 3 of 3 |" in out
    assert "| 0, 1, 2 | -0.022, -0.038, -0.038 | -0.033 | 0 of 3 | 3 of 3 |" in out
    assert "| 0, 1, 2 | -0.021, -0.033, -0.033 | -0.029 | 0 of 3 | 3 of 3 |" in out
    assert "| 0, 1, 2 | +0.009, -0.001, +0.000 | +0.003 | 2 of 3 | 3 of 3 |" in out


def test_the_time_ewc_on_top_costs_side_by_side_is_its_fisher_pass() -> None:
    # docs/lm-equal-bytes.md, "96 windows a step ... side by side": each seed's two runs trained at once,
    # one a core
    runs = [r for r in json.loads(Path(PRETRAIN2).read_text())["runs"]
            if r["config"]["options"].get("replay_batch") == 80
            and r["config"]["options"].get("strength", 0.01) == 0.01]  # the weaker EWC ran a day later
    seed = {s: [r for r in runs if r["config"]["seed"] == s] for s in (0, 1, 2)}
    # (seed, replay alone's row: training s a task and nothing after it, EWC on top's: the same steps, then
    # its Fisher)
    for s, replay_row, ewc_row in ((0, "| 1 | 1774.565 | 0.010 | 0.000 |", "| 1 | 1775.181 | 17.743 | 0.010 |"),
                                   (1, "| 1 | 1779.052 | 0.009 | 0.000 |", "| 1 | 1787.545 | 17.756 | 0.010 |"),
                                   (2, "| 1 | 1812.995 | 0.008 | 0.000 |", "| 1 | 1804.910 | 17.384 | 0.010 |")):
        out = lm_report.importance_table(seed[s])
        assert replay_row in out and ewc_row in out
    # seed 2's whole-run seconds do not compare: its replay run pre-trained the model (1,280 s) while the
    # EWC run waited for it, so only the per-task rows above stand for that seed
    # (seed, wall bounds, CPU bounds): 1.3 % wall and 1.5 % CPU on seed 0, 1.7 % and 1.9 % on seed 1
    for s, wall, cpu in ((0, (1.012, 1.014), (1.014, 1.016)), (1, (1.017, 1.018), (1.018, 1.019))):
        ewc, replay = sorted(seed[s], key=lambda r: r["method"])
        assert wall[0] < ewc["seconds"] / replay["seconds"] < wall[1]
        assert cpu[0] < ewc["cpu_seconds"] / replay["cpu_seconds"] < cpu[1]
