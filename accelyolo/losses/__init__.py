"""Detection losses, kept outside the model; each model family (`accelyolo.families`) picks and configures its own."""

from accelyolo.losses.anchor_based import AnchorBasedLoss, FocalLoss
from accelyolo.losses.anchor_free import AnchorFreeLoss
from accelyolo.losses.assigner import Assignment, TaskAlignedAssigner

__all__ = ["AnchorBasedLoss", "AnchorFreeLoss", "Assignment", "FocalLoss", "TaskAlignedAssigner"]
