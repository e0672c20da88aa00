"""Screening feedback before an update trains on it: what to hold for a maintainer, and why.

A model that learns from its users can be taught to misbehave by them. Every feedback batch passes
these screens first; an example any screen flags is *held* (not trained on, listed for maintainers
with a reason) rather than dropped. Each screen is a pure function of what the caller gives it: the
current model's penultimate features of the examples, its softmax over the labels it has learned,
the labels, the sources (who sent each example: the authenticated API key, never a free-text field
the sender chooses) and, optionally, a trusted reference set (the guard sets of learned tasks).

- `cap_source_share` (per-source limits): no source may hold more than `max_source_share` of the
  examples an update trains on; its excess is held. `SourceRateLimiter` limits examples per key per
  minute at intake (a token bucket; the service answers 429).
- `label_noise` (confident learning, Northcutt et al. 2021): an example is held when its label
  disagrees with the consensus of its nearest neighbours in the model's representation space and
  with the model's own confident prediction. Neighbours vote by *source*: one key's many examples
  count as at most `votes_per_source` votes, so an attacker outvoting honest users in one region by
  volume (a targeted flip at 30 % of the stream) still loses to the number of honest contributors.
  Trusted reference examples and the model vote too. A label the model has never learned (a new
  intent) is judged by its neighbours only: it is never held for being new.
- `label_collisions` (collisions.py): per label, whoever sent it, examples that carry a copy of
  another label's examples (a flipped class leaves a second mode inside the label it claims, and the
  relation is one-way), in the inputs and in the model's representation; near-duplicates count once.
- `guard_agreement` (guards.py): examples that the trusted guard sets (deep k-nearest neighbours) and
  the current model both place inside one other class.
- `backdoor_outliers` (spectral signatures, Tran et al. 2018; activation clustering, Chen et al.
  2018): per label, examples far out along the top principal direction of the label's centred
  features, or a tight cluster of the label sent by few sources, are held.

`screen` runs the layers and returns a `ScreenResult` (held ids with reasons, kept ids, counts);
`training_data` applies it so that held examples never reach the learner. `represent` computes the
features and probabilities from a `ContinualClassifier`, `screen_model` does both.

Modules: base.py (`ScreenConfig`, `Hold`, `ScreenResult`), sources.py (rate limit, share cap, source
outliers), labels.py (label noise), backdoor.py (spectral signatures, activation clustering),
collisions.py (label collisions), guards.py (guard agreement), screen.py (the layers together).

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> f = torch.cat([torch.randn(40, 8, generator=g) + 4, torch.randn(40, 8, generator=g) - 4])
>>> labels = ["a"] * 40 + ["b"] * 40
>>> labels[3] = "b"  # a mislabelled example
>>> result = screen(f, labels, [f"user{i % 10}" for i in range(80)], config=ScreenConfig(backdoor=False))
>>> result.held, result.reasons()[3][0].split(":")[0]
([3], 'label-noise')
"""


from lifelong.screening.backdoor import backdoor_outliers
from lifelong.screening.base import SCREENS, Hold, ScreenConfig, ScreenResult
from lifelong.screening.collisions import Collision, find_collisions, label_collisions, unit_rows
from lifelong.screening.guards import guard_agreement
from lifelong.screening.labels import LabelEstimate, estimate_labels, label_noise
from lifelong.screening.screen import represent, screen, screen_model, training_data
from lifelong.screening.sources import SourceRateLimiter, cap_source_share, source_names, source_outliers

__all__ = [
    "SCREENS",
    "Collision",
    "Hold",
    "LabelEstimate",
    "ScreenConfig",
    "ScreenResult",
    "SourceRateLimiter",
    "backdoor_outliers",
    "cap_source_share",
    "estimate_labels",
    "find_collisions",
    "guard_agreement",
    "label_collisions",
    "label_noise",
    "represent",
    "screen",
    "screen_model",
    "source_names",
    "source_outliers",
    "training_data",
    "unit_rows",
]
