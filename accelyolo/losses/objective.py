"""Objectives: what a training step minimises, `total, items = objective(model, batch, images)`.

An objective runs the model on the batch and scores its outputs; `names` name the `items` (the loss columns
of results.csv and the progress bar). Objectives stack: one that adds terms (distillation) wraps another
(detection, or detection + segmentation) and reads the detection predictions the inner one made through
`run`, so every combination of tasks and added terms is one object built from parts, with no trainer
subclass per combination.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["DetectionObjective", "Objective", "as_objective"]


class Objective:
    """`total, items = objective(model, batch, images)`; `names` name the items."""

    names: tuple[str, ...] = ()

    def run(self, model: Any, batch: dict[str, Any], images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """`(total, items, detection predictions)` of one batch: the predictions for a wrapping objective."""
        raise NotImplementedError

    def __call__(self, model: Any, batch: dict[str, Any], images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total, items, _ = self.run(model, batch, images)
        return total, items


class DetectionObjective(Objective):
    """Detection alone: `loss(model(images), batch["targets"])` with the loss's `names`."""

    def __init__(self, loss: Any) -> None:
        self.loss = loss
        self.names = tuple(loss.names)

    def run(self, model: Any, batch: dict[str, Any], images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        preds = model(images)
        total, items = self.loss(preds, batch["targets"])
        return total, items, preds


def as_objective(part: Any) -> Objective:
    """`part` as an objective: itself when it is one, else a detection loss `(preds, targets)` wrapped."""
    return part if isinstance(part, Objective) else DetectionObjective(part)
