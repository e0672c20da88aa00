"""The poisoning benchmark's defences: lifelong's screens and the Adversarial Robustness Toolbox's
detectors (the peers) on the same feedback, and how well each found the poison."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from poisoning_worlds import Scenario
from torch import Tensor, nn

from lifelong.models import ContinualClassifier
from lifelong.screening import ScreenConfig, screen_model


def _learned(saved: Any) -> list[int]:
    return sorted({int(c) for t in saved.spec.tasks for c in t["classes"]})


def _reference(saved: Any) -> tuple[Tensor, list[str]]:
    """The guard sets as the trusted reference (held-out examples of the learned tasks)."""
    x = torch.cat([gx for gx, _ in saved.guards])
    labels = [saved.spec.labels[int(c)] for _, gy in saved.guards for c in gy]
    return x, labels


def defend_screens(saved: Any, sc: Scenario, config: ScreenConfig) -> tuple[list[int], dict[str, Any]]:
    """Our screens on the current model's representations: (held positions, counts by screen)."""
    result = screen_model(saved.model, sc.x, sc.labels, sc.sources, saved.spec.labels, _learned(saved),
                          _reference(saved), config, task=len(saved.spec.tasks) - 1)
    counts: dict[str, dict[str, int]] = {}
    for h in result.holds:
        row = counts.setdefault(h.screen, {"poison": 0, "clean": 0})
        row["poison" if bool(sc.poison[h.index]) else "clean"] += 1
    return result.held, {"by_screen": counts, "seconds": result.report["seconds"]}


class _Penultimate(nn.Module):
    """The current model's penultimate features as the last layer ART reads its activations from."""

    def __init__(self, model: ContinualClassifier):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.features(x)


def defend_art(saved: Any, sc: Scenario, kind: str, option: Any) -> tuple[list[int], dict[str, Any]]:
    """ART's SpectralSignatureDefense (`option`: expected_pp_poison) or ActivationDefence (`option`:
    cluster_analysis) on the same features: (held positions, info)."""
    import logging

    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    from art.estimators.classification import PyTorchClassifier

    logging.getLogger("art").setLevel(logging.ERROR)
    started = time.perf_counter()
    vocab = sorted(set(sc.labels))
    y = np.zeros((len(sc.labels), len(vocab)), dtype=np.float32)
    y[np.arange(len(sc.labels)), [vocab.index(v) for v in sc.labels]] = 1
    saved.model.eval()
    net = nn.Sequential(_Penultimate(saved.model), nn.Identity())  # ART reads the last layer: the features

    def classifier(classes: int) -> Any:
        return PyTorchClassifier(net, loss=nn.CrossEntropyLoss(), input_shape=tuple(sc.x.shape[1:]),
                                 nb_classes=classes, device_type="cpu")

    x = sc.x.numpy().astype(np.float32)
    clean: list[int]
    np.random.seed(0)  # ART's k-means draws from numpy's global generator
    if kind == "spectral":
        defence = SpectralSignatureDefense(classifier(len(vocab)), x, y, expected_pp_poison=float(option),
                                           batch_size=256, eps_multiplier=1.5)
        _, clean = defence.detect_poison()
    else:
        # ART clusters each label's activations in two after reducing them to 10 dimensions: a label
        # needs 3 examples for that (its rarer labels' examples are left to pass), and 10 for all 10
        # dimensions (with fewer, it gets as many as the smallest label allows)
        counts = y.sum(0)
        rows = np.nonzero(counts[y.argmax(1)] >= 3)[0]
        clean = [1] * len(sc.labels)
        if len(rows):
            sub_y = y[rows][:, counts >= 3]
            dims = max(1, min(10, int(sub_y.sum(0).min()) - 1))
            defence = ActivationDefence(classifier(sub_y.shape[1]), x[rows], sub_y)
            _, sub_clean = defence.detect_poison(nb_clusters=2, nb_dims=dims, reduce="PCA",
                                                 cluster_analysis=str(option))
            for r, c in zip(rows.tolist(), sub_clean, strict=True):
                clean[r] = c
    held = [i for i, c in enumerate(clean) if not c]
    return held, {"option": option, "seconds": round(time.perf_counter() - started, 3)}


def detection(held: Sequence[int], poison: Tensor) -> dict[str, float | None]:
    mask = torch.zeros(len(poison), dtype=torch.bool)
    mask[list(held)] = True
    tp, n_poison, n_clean = int((mask & poison).sum()), int(poison.sum()), int((~poison).sum())
    return {"precision": tp / int(mask.sum()) if mask.any() else None,
            "recall": tp / n_poison if n_poison else None,
            "clean_held": int((mask & ~poison).sum()) / n_clean if n_clean else 0.0,
            "held": int(mask.sum())}
