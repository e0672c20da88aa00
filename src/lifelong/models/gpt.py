"""A small decoder-only transformer (GPT) over bytes, built for continual language modelling.

The layout is GPT-2's (Radford et al. 2019; nanoGPT's code is the model read): token and position
embeddings, pre-norm blocks of causal self-attention and a 4x MLP, a final LayerNorm and an output
layer. Three choices serve lifelong's exact per-sample importance (lifelong.importance):

- every parameter lives in an ``nn.Linear``, ``nn.Embedding`` or ``nn.LayerNorm``, the modules with
  closed-form per-sample rules; attention itself (``scaled_dot_product_attention``) has no weights;
- position embeddings are looked up with indices of shape [N, L], so that module's output holds each
  sample's own rows (a [1, L] lookup broadcast over the batch would mix the samples' gradients);
- the output layer is not tied to the token embedding: a weight used by two modules would make the
  per-module squares of a per-sample gradient miss their cross term.

The same plain modules are what FSDP2's ``fully_shard`` wraps (lifelong.distributed.shard_model).

>>> import torch
>>> model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8))
>>> model(torch.zeros(3, 8, dtype=torch.long)).shape
torch.Size([3, 8, 256])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of a GPT. `vocab_size=256` reads raw UTF-8 bytes (no tokenizer to train or store)."""

    vocab_size: int = 256
    block_size: int = 128  # longest context, in tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be >= 1, not {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")

    @property
    def num_parameters(self) -> int:
        """Parameters of the model this config builds (computed, nothing allocated)."""
        d, b = self.n_embd, int(self.bias)
        block = 2 * 2 * d + (3 * d * d + 3 * d * b) + (d * d + d * b) + (4 * d * d + 4 * d * b) + (4 * d * d + d * b)
        return (self.vocab_size + self.block_size) * d + self.n_layer * block + 2 * d + d * self.vocab_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"GPTConfig has no option(s) {sorted(unknown)}; it takes {sorted(known)}")
        return cls(**values)


# Named sizes. The first three train on a CPU here; the others are built to measure what
# consolidation costs (a few steps each). Names give the parameter count, rounded.
PRESETS: dict[str, GPTConfig] = {
    "gpt-0.2m": GPTConfig(n_layer=2, n_head=2, n_embd=64),
    "gpt-1m": GPTConfig(n_layer=4, n_head=4, n_embd=128),
    "gpt-4m": GPTConfig(n_layer=4, n_head=4, n_embd=256),
    "gpt-10m": GPTConfig(n_layer=8, n_head=5, n_embd=320),
    "gpt-16m": GPTConfig(n_layer=8, n_head=6, n_embd=384),
    "gpt-100m": GPTConfig(n_layer=14, n_head=12, n_embd=768),
    "gpt-350m": GPTConfig(n_layer=24, n_head=16, n_embd=1024),
    "gpt-760m": GPTConfig(n_layer=36, n_head=20, n_embd=1280),
}


def gpt_config(name: str, **overrides: Any) -> GPTConfig:
    """A preset by name (see PRESETS), with any field overridden.

    >>> gpt_config("gpt-1m").num_parameters
    875264
    """
    if name not in PRESETS:
        raise ValueError(f"unknown GPT size {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: Tensor) -> Tensor:
        n, length, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (t.view(n, length, self.n_head, d // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.c_proj(y.transpose(1, 2).reshape(n, length, d))


class MLPBlock(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLPBlock(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.ln_1(x)))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    """`forward(idx[, task])` maps token ids [N, L] to next-token logits [N, L, vocab]. The task id
    (the learner passes one) is ignored: one model for every domain, as a language model is used."""

    def __init__(self, config: GPTConfig | None = None):
        super().__init__()
        self.config = config or GPTConfig()
        c = self.config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: Tensor, task: Tensor | None = None) -> Tensor:
        if idx.dim() != 2:
            raise ValueError(f"GPT takes token ids of shape [N, L], not {tuple(idx.shape)}")
        n, length = idx.shape
        if length > self.config.block_size:
            raise ValueError(f"sequence of {length} tokens is longer than block_size {self.config.block_size}")
        idx = idx.long()
        positions = torch.arange(length, device=idx.device).expand(n, length)  # per sample: see the module doc
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None, stop: int | None = None) -> Tensor:
        """Continue each row of `idx` by `max_new_tokens` tokens: greedy at temperature 0, else sampled.
        Rows that emitted `stop` keep emitting it (so a batch ends at the same length)."""
        was_training = self.training
        self.eval()
        idx = idx.to(self.lm_head.weight.device)
        try:
            done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
            for _ in range(max_new_tokens):
                logits = self(idx[:, -self.config.block_size:])[:, -1]
                if temperature == 0:
                    nxt = logits.argmax(-1)
                else:
                    probs = torch.softmax(logits / temperature, -1)
                    if generator is not None and generator.device != probs.device:  # the same draws on any device
                        probs = probs.float().cpu()
                    nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(idx.device)
                if stop is not None:
                    nxt = torch.where(done, torch.full_like(nxt, stop), nxt)
                    done |= nxt == stop
                idx = torch.cat([idx, nxt.unsqueeze(1).to(idx.dtype)], 1)
                if stop is not None and bool(done.all()):
                    break
            return idx
        finally:
            self.train(was_training)
