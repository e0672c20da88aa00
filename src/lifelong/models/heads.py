"""Task-aware output: one shared output layer whose logits are masked per sample.

Masking the columns of one Linear layer to the classes of a sample's task is exactly a separate
head per task (each row of the weight is used by one task only), so task-, domain- and
class-incremental learning share one model shape; only the mask differs (`TaskStream.class_mask`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ContinualClassifier(nn.Module):
    """Wraps a network that outputs logits over the whole label space.

    `forward(x, task)` returns those logits with the classes a sample may not take set to -inf
    (so softmax gives them zero probability and zero gradient).

    >>> import torch
    >>> model = ContinualClassifier(torch.nn.Linear(4, 6), num_tasks=3, num_classes=6)
    >>> mask = torch.zeros(3, 6, dtype=torch.bool); mask[0, :2] = True; mask[1, 2:4] = True
    >>> model.set_class_mask(mask)
    >>> model(torch.zeros(2, 4), torch.tensor([0, 1])).isfinite().sum(1).tolist()
    [2, 2]
    """

    def __init__(self, net: nn.Module, num_tasks: int, num_classes: int):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.class_mask: Tensor
        self.register_buffer("class_mask", torch.ones(num_tasks, num_classes, dtype=torch.bool),
                             persistent=False)

    def set_class_mask(self, mask: Tensor) -> None:
        self.class_mask = mask.to(self.class_mask.device)

    @property
    def head(self) -> nn.Linear:
        """The output layer (one row per class): what weight aligning rescales."""
        head = getattr(self.net, "head", None)
        if not isinstance(head, nn.Linear):
            raise TypeError(f"{type(self.net).__name__} exposes no Linear `head`")
        return head

    def features(self, x: Tensor, task: Tensor | None = None) -> Tensor:
        """The representation the output layer reads (nearest-mean classifiers, herding)."""
        if getattr(self.net, "takes_task", False):
            return self.net.features(x, task)  # type: ignore[operator]
        if not hasattr(self.net, "features"):
            raise TypeError(f"{type(self.net).__name__} has no `features` method")
        return self.net.features(x)  # type: ignore[operator]

    @torch.no_grad()
    def grow(self, num_classes: int, num_tasks: int | None = None) -> None:
        """Widen the output layer to `num_classes` (new rows initialised like a fresh Linear; old rows
        untouched) and the class mask to `num_tasks` rows, e.g. when feedback brings a new label."""
        head = self.head
        if num_classes < head.out_features:
            raise ValueError(f"cannot shrink the output from {head.out_features} to {num_classes} classes")
        if num_classes > head.out_features:
            fresh = nn.Linear(head.in_features, num_classes - head.out_features, bias=head.bias is not None)
            head.weight = nn.Parameter(torch.cat([head.weight, fresh.weight.to(head.weight)]))
            if head.bias is not None:
                head.bias = nn.Parameter(torch.cat([head.bias, fresh.bias.to(head.bias)]))
            head.out_features = num_classes
        tasks = max(num_tasks or 0, self.class_mask.shape[0])
        mask = torch.zeros(tasks, num_classes, dtype=torch.bool, device=self.class_mask.device)
        mask[: self.class_mask.shape[0], : self.class_mask.shape[1]] = self.class_mask
        self.class_mask = mask
        self.num_classes = num_classes

    def forward(self, x: Tensor, task: Tensor | None = None) -> Tensor:
        # a network with per-task input layers (control) takes the task ids too
        logits = self.net(x, task) if getattr(self.net, "takes_task", False) else self.net(x)
        if task is None:
            return logits
        return logits.masked_fill(~self.class_mask[task], float("-inf"))
