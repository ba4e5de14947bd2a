"""Detection losses, kept outside the model; each model family (`accelyolo.families`) picks and configures its own.
Objectives (`objective.py`) run the model on a batch and score it with them."""

from accelyolo.losses.anchor_based import AnchorBasedLoss, FocalLoss
from accelyolo.losses.anchor_free import AnchorFreeLoss
from accelyolo.losses.assigner import Assignment, TaskAlignedAssigner
from accelyolo.losses.objective import DetectionObjective, Objective, as_objective

__all__ = [
    "AnchorBasedLoss",
    "AnchorFreeLoss",
    "Assignment",
    "DetectionObjective",
    "FocalLoss",
    "Objective",
    "TaskAlignedAssigner",
    "as_objective",
]
