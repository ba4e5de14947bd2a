"""Objectives: what a training step minimises, `total, items = objective(model, batch, images)`.

An objective runs the model on the batch and scores its outputs; `names` name the `items` (the loss columns
of results.csv and the progress bar). Objectives stack: one that adds terms (distillation) wraps another
(detection, or detection + segmentation) and reads the detection predictions the inner one made through
`run`, so every combination of tasks and added terms is one object built from parts, with no trainer
subclass per combination. An objective that holds state of its own (the feature adapters of distillation,
hooks on the student) takes part in the run through five hooks the trainer calls on the outermost objective,
each passed on by a wrapper: `prepare` (once the model is prepared), `start_epoch`, `extra_state` /
`load_extra_state` (the bundle's extra section) and `close`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
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

    def prepare(self, accelerator: Any, model: torch.nn.Module) -> None:
        """Once `accelerator.prepare` has wrapped the run's model (`model`: the unwrapped one): move or wrap
        what the objective trains beside it, attach what it reads from it."""

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Set what depends on the epoch (1-based, of `epochs`) before its first step."""

    def extra_state(self) -> dict[str, Any]:
        """Training-only tensors to save in the bundle's extra section, by name (none by default)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any], source: Path | None) -> None:
        """Take back what `extra_state` saved, from the bundle `source` (named in an error)."""

    def close(self) -> None:
        """Release what the objective attached to the model (hooks), however the run ended."""


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
