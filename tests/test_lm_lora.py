"""LoRA on the GPT (lifelong.lm.lora): only the adapters train, EWC and olora run on them, and
benchmarks/lm.py keeps a LoRA run apart from the full fine-tuning run of the same strategy."""

import sys
from pathlib import Path

import pytest
import torch
from lm_util import needs_wordnet

from lifelong.data.lm import LMDataConfig
from lifelong.lm.lora import GPTLoRAConfig, adapter_parameters, add_lora
from lifelong.lm.run import LMRunConfig, run_lm
from lifelong.models.gpt import GPT, GPTConfig, gpt_config

ROOT = Path(__file__).resolve().parent.parent


def tiny_lora_run(strategy, options, rank=4):
    data = LMDataConfig(pretrain_steps=6, steps=4, batch_size=4, length=32, eval_windows=4)
    cfg = LMRunConfig("text-domains", "gpt-0.2m", strategy, options, data, domains=("python-code", "wordnet"),
                      importance_batch=4, lora_rank=rank)
    return run_lm(cfg)


def test_lora_on_a_gpt_starts_at_the_same_outputs_and_trains_only_the_adapters():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8))
    x = torch.randint(0, 256, (3, 8))
    before_out = model(x)
    add_lora(model, GPTLoRAConfig(rank=2, alpha=4), generator_seed=0)
    torch.testing.assert_close(model(x), before_out)  # B = 0
    # per block: A [2, in] and B [out, 2] on c_attn (16 -> 48), attn c_proj (16 -> 16), c_fc (16 -> 64),
    # mlp c_proj (64 -> 16)
    per_block = 2 * (16 + 48) + 2 * (16 + 16) + 2 * (16 + 64) + 2 * (64 + 16)
    assert adapter_parameters(model) == 2 * per_block
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert len(frozen) == len(list(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8)).parameters()))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(x).logsumexp(-1).mean().backward()
        opt.step()
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in frozen.items())  # the base never moved
    assert not torch.allclose(model(x), before_out)  # the adapters did
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(model, GPTLoRAConfig(rank=2))


def test_bad_lora_settings_are_refused():
    for bad in ({"rank": 0}, {"alpha": 0}, {"targets": ("wte",)}, {"targets": ()}):
        with pytest.raises(ValueError):
            GPTLoRAConfig(**bad)
    with pytest.raises(ValueError, match="lora_rank"):
        LMRunConfig(lora_rank=-1)


@needs_wordnet
def test_ewc_on_the_adapters_stores_two_floats_per_adapter_parameter_and_repeats_exactly():
    result = tiny_lora_run("ewc", {"strength": 1.0, "samples": 8})
    n = result["trainable_parameters"]
    assert n == 2 * (4 * (64 + 192) + 4 * (64 + 64) + 4 * (64 + 256) + 4 * (256 + 64))  # gpt-0.2m, rank 4
    assert result["parameters"] == gpt_config("gpt-0.2m", block_size=32).num_parameters  # the GPT's own
    assert 8 * n <= result["stored_bytes"] < 8 * n + 10_000  # importance + anchor, and a generator state
    assert tiny_lora_run("ewc", {"strength": 1.0, "samples": 8})["scores"] == result["scores"]


@needs_wordnet
@pytest.mark.parametrize("mode", ["project", "inputs", "loss"])
def test_orthogonal_lora_runs_on_a_gpt_and_keeps_one_basis_per_adapted_layer(mode):
    result = tiny_lora_run("olora", {"mode": mode, "samples": 8})
    assert len(result["scores"]) == 3 and all(len(row) == 3 for row in result["scores"])
    # 2 blocks x 4 adapted layers, a float basis [in, k] each (k <= in)
    assert 0 < result["stored_bytes"] <= 4 * 2 * (64 * 64 * 3 + 256 * 256)


def test_the_benchmark_keys_a_lora_run_apart_from_full_fine_tuning():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import lm_jobs
    import lm_methods
    import lm_plan
    import lm_report

    args = type("Args", (), {"setting": "domains", "split": "valid", "device": "cpu"})()
    strategy, options = lm_methods._options("domains", "gpt-0.2m", "lora", {"lora": 8})
    lora = lm_plan.run_config(args, "gpt-0.2m", strategy, options, 0)
    naive = lm_plan.run_config(args, "gpt-0.2m", "naive", {}, 0)
    assert lora.lora_rank == 8 and lora.options == {} and naive.lora_rank == 0
    assert lm_jobs.run_key({"config": lora.to_dict()}) != lm_jobs.run_key({"config": naive.to_dict()})
    assert lm_report._shown(lora.to_dict()) == {"lora": 8}
    # a learning rate other than the default is the run's, and keyed and shown too
    faster = lm_plan.run_config(args, "gpt-0.2m", "naive", {"lora": 8, "lr": 0.003}, 0)
    assert faster.lr == 0.003 and faster.options == {}
    assert lm_report._shown(faster.to_dict()) == {"lora": 8, "lr": 0.003}
    assert lm_jobs.run_key({"config": faster.to_dict()}) != lm_jobs.run_key({"config": lora.to_dict()})


def test_a_continual_learning_rate_keeps_the_same_pre_trained_model():
    from lifelong.lm.run import _pretrain_key

    assert _pretrain_key(LMRunConfig(lr=0.003)) == _pretrain_key(LMRunConfig())
    assert _pretrain_key(LMRunConfig(pretrain_lr=0.003)) != _pretrain_key(LMRunConfig())
