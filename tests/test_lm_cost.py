"""benchmarks/lm_cost.py's kernel timing: the penalty's gradient as the library adds it, in fp32 and
bf16 storage, and as one fused pass, which must add the library's gradient before it is timed."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # as the benchmark scripts import it

import lm_cost  # noqa: E402
import lm_cost_table  # noqa: E402


def test_penalty_kernels_times_every_way_and_counts_the_bytes_each_moves() -> None:
    row = lm_cost.penalty_kernels("gpt-0.2m", reps=1)
    assert row["parameters"] == 141_056
    kernels = row["kernels"]
    assert set(kernels) == set(lm_cost.PENALTY_BYTES)
    for name in ("fp32, two passes (the library's default)", "bf16 precision (the library's storage='bf16')"):
        assert kernels[name]["seconds"] > 0
        assert kernels[name]["ns_per_parameter"] == kernels[name]["seconds"] / 141_056 * 1e9
    # the fused pass reads and writes less than the library's two passes
    fused = kernels["fp32, one fused pass (torch.compile)"]
    assert fused["bytes_per_parameter"] < kernels["fp32, two passes (the library's default)"]["bytes_per_parameter"]
    # where this machine can compile it, it ran only after matching the library's gradient (assert_close inside)
    assert fused["seconds"] is None or fused["seconds"] > 0


def test_fold_times_four_optimizers_after_the_folded_step_matched_the_library() -> None:
    import lm_fold

    row = lm_fold.fold_steps("gpt-0.2m", batch=2, steps=1)  # raises unless one folded step matched
    assert row["parameters"] == 141_056 and row["tokens_per_step"] == 2 * lm_cost.LENGTH
    assert set(row["step_seconds"]) == {"torch Adam, naive", "torch Adam, EWC (add_gradient_)",
                                        "compiled Adam, naive", "compiled Adam, EWC folded in"}
    assert all(len(s) == 1 and s[0] > 0 for s in row["step_seconds"].values())
    assert set(row["update_seconds"]) == set(row["step_seconds"]) and min(row["update_seconds"].values()) > 0
    s = row["step_seconds"]
    assert row["step_ratio_folded"] == s["compiled Adam, EWC folded in"][0] / s["compiled Adam, naive"][0]


def test_methods_times_each_method_in_turn_at_the_options_lm_py_runs_it() -> None:
    import pytest
    from lm_method_cost import method_steps

    row = method_steps("gpt-0.2m", ["replay", "distill+replay", "ewc+replay"],
                       {"replay": 2.5, "replay_batch": 8, "weight": 0.1, "strength": 0.01}, steps=2)
    assert row["parameters"] == 141_056 and row["setting"] == "domains" and row["set"]["replay_batch"] == 8
    # validation's choices at the size, then --set; the replay share is turned into tokens as lm.py does
    assert row["methods"]["distill+replay"]["strategy"] == "token-replay+lm-distill"
    # each option goes to the methods that take it
    assert row["methods"]["distill+replay"]["options"]["weight"] == 0.1
    assert row["methods"]["ewc+replay"]["options"]["strength"] == 0.01
    assert "weight" not in row["methods"]["replay"]["options"]
    assert all(m["options"]["replay_batch"] == 8 and m["options"]["tokens"] == 6_192_000
               for m in row["methods"].values())
    assert all(len(s) == 2 and min(s) > 0 for s in row["step_seconds"].values())
    s = row["step_seconds"]
    assert row["ratio_fastest"]["replay"] == 1.0
    assert row["ratio_fastest"]["distill+replay"] == min(s["distill+replay"]) / min(s["replay"])
    assert "distill+replay" in lm_cost_table.methods_table(row)
    with pytest.raises(ValueError, match="at least two different methods"):
        method_steps("gpt-0.2m", ["replay", "replay"], {}, steps=1)
    with pytest.raises(ValueError, match="unknown method"):
        method_steps("gpt-0.2m", ["replay", "ewc-replay"], {}, steps=1)
    with pytest.raises(ValueError, match="at most 149 steps"):
        method_steps("gpt-0.2m", ["replay", "naive"], {}, steps=150)


def test_measure_keeps_each_devices_rows_apart_and_projects_from_each(tmp_path, monkeypatch, capsys) -> None:
    import pytest
    import torch

    monkeypatch.setattr(lm_cost, "OUT", tmp_path / "lm-cost.json")
    row = lm_cost.measure("gpt-0.2m", batch=2, steps=1)
    assert row["device"] == "cpu" and row["tokens_per_step"] == 2 * lm_cost.LENGTH
    assert row["state_bytes_per_parameter"] == 8.0 and row["step_ratio_min"] > 0
    lm_cost._save("single", row)
    # a GPU's row for the same size and batch (its device fields set by hand: no GPU here) joins the CPU's,
    # and a second CPU row of that size and batch replaces the first
    lm_cost._save("single", {**row, "device": "cuda", "device_name": "a GPU", "peak_device_gb": 0.5})
    lm_cost._save("single", {**row, "steps": 7})
    lm_cost._save("single", {**row, "batch": 4, "tokens_per_step": 4 * lm_cost.LENGTH})
    saved = json.loads(lm_cost.OUT.read_text())["single"]
    assert sorted((r.get("device"), r["batch"], r["steps"]) for r in saved) == [
        ("cpu", 2, 7), ("cpu", 4, 1), ("cuda", 2, 1)]
    assert lm_cost.measured("gpt-0.2m", "cuda", 2) and not lm_cost.measured("gpt-0.2m", "cuda", 4)
    assert lm_cost_table.print_tables(lm_cost.OUT) == 0
    out = capsys.readouterr().out
    assert "| gpt-0.2m (a GPU) | 141,056 |" in out and "0.5 GB on the device |" in out
    assert "measured on one CPU core" in out and "measured on a GPU" in out
    assert "From gpt-0.2m (141,056 parameters), measured on one CPU core" in out  # its largest step: 512 tokens
    assert "Step ratio EWC/naive at 512 tokens per step" in out
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            lm_cost.measure("gpt-0.2m", batch=2, steps=1, device="cuda")
