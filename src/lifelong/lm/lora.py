"""LoRA adapters on a GPT: the base frozen, low-rank adapters on its attention and MLP Linear layers train.

Hu et al. 2021, "LoRA: Low-rank adaptation of large language models", through peft's
``inject_adapter_in_model`` (the GPT stays the same module, with each targeted ``nn.Linear`` replaced by
peft's ``lora.Linear``: base weight frozen, ``W x + (alpha / r) B A x``, B zero at the start). The
strategies then see only the adapters as trainable parameters: EWC's importance and anchors cover them
alone (``lora-ewc`` in benchmarks/lm.py), and ``olora`` (strategies/olora.py) finds them by their
``lora_A``/``lora_B`` and folds each task's adapter into the frozen base after it.

Embeddings, LayerNorms and the output layer stay frozen too, as in the usual LoRA fine-tuning of a
language model. Dropout on the adapters' inputs is 0, so that a run repeats exactly under its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# every Linear of a block: attention's qkv and output projections, the MLP's two layers
GPT_TARGETS = ("c_attn", "c_proj", "c_fc")


@dataclass(frozen=True)
class GPTLoRAConfig:
    """LoRA on a GPT: `rank` r of every adapter, `alpha` (scale alpha / r), the layers it adapts."""

    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = GPT_TARGETS

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, not {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be > 0, not {self.alpha}")
        unknown = set(self.targets) - set(GPT_TARGETS)
        if not self.targets or unknown:
            raise ValueError(f"LoRA targets must be a non-empty subset of {GPT_TARGETS}, not {self.targets}")


def add_lora(model: nn.Module, config: GPTLoRAConfig, generator_seed: int | None = None) -> nn.Module:
    """Freeze `model` and add LoRA adapters (in place; the model is returned). The adapters' A is drawn
    from torch's global generator, seeded with `generator_seed` when given (B starts at zero, so the
    model's outputs are unchanged)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:  # peft is in the `text` extra
        raise ImportError("LoRA on a GPT needs peft: pip install 'lifelong[text]'") from e
    if any(hasattr(m, "lora_A") for m in model.modules()):
        raise ValueError("the model already has LoRA adapters")
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0, target_modules=list(config.targets))
    model = inject_adapter_in_model(lora, model)
    for name, p in model.named_parameters():  # peft freezes the base; said here, not left to its defaults
        p.requires_grad_("lora_" in name)
    return model


def adapter_parameters(model: nn.Module) -> int:
    """How many parameters train (the adapters')."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
