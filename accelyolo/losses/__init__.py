"""Detection losses, kept outside the model: `build_loss(model, ...)` picks the one for its family."""

from __future__ import annotations

import logging

from torch import nn

from accelyolo.losses.anchor_based import AnchorBasedLoss, FocalLoss
from accelyolo.losses.anchor_free import AnchorFreeLoss
from accelyolo.losses.assigner import Assignment, TaskAlignedAssigner

__all__ = ["AnchorBasedLoss", "AnchorFreeLoss", "Assignment", "FocalLoss", "TaskAlignedAssigner", "build_loss"]

logger = logging.getLogger(__name__)

# Family default gains: YOLOv8 (box, cls, dfl) and YOLOv5 hyp.scratch-low (box, obj, cls) before scaling.
ANCHOR_FREE_GAINS = {"box": 7.5, "cls": 0.5, "dfl": 1.5}
ANCHOR_BASED_GAINS = {"box": 0.05, "obj": 1.0, "cls": 0.5}


def build_loss(
    model: nn.Module,
    box: float | None = None,
    cls: float | None = None,
    dfl: float | None = None,
    obj: float | None = None,
    cls_pw: float = 1.0,
    obj_pw: float = 1.0,
    anchor_t: float = 4.0,
    fl_gamma: float = 0.0,
    label_smoothing: float = 0.0,
    imgsz: int = 640,
) -> AnchorFreeLoss | AnchorBasedLoss:
    """The loss for `model`'s family, with `None` gains replaced by the family defaults.

    Anchor-based gains are scaled as YOLOv5's train.py does: box x 3/nl, cls x nc/80 x 3/nl,
    obj x (imgsz/640)^2 x 3/nl. Options of the other family are ignored with a warning when set to a
    non-default value (e.g. `obj` for an anchor-free model).

    Returns:
        A module called as `total, items = loss_fn(preds, targets)`; `loss_fn.names` labels `items`.
    """
    model = getattr(model, "module", model)  # a DDP-wrapped model
    family, head = getattr(model, "family", None), getattr(model, "head", None)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"build_loss: label_smoothing must lie in [0, 1), got {label_smoothing}")
    if family == "anchor_free":
        ignored = {
            "obj": obj is not None,
            "cls_pw": cls_pw != 1.0,
            "obj_pw": obj_pw != 1.0,
            "anchor_t": anchor_t != 4.0,
            "fl_gamma": fl_gamma != 0.0,
            "label_smoothing": label_smoothing != 0,
        }
        if any(ignored.values()):
            logger.warning(
                "build_loss: %s apply to anchor-based (yolov5*) models and are ignored for this anchor-free model",
                ", ".join(k for k, v in ignored.items() if v),
            )
        g = ANCHOR_FREE_GAINS
        return AnchorFreeLoss(
            head,
            box=g["box"] if box is None else box,
            cls=g["cls"] if cls is None else cls,
            dfl=g["dfl"] if dfl is None else dfl,
        )
    if family == "anchor_based":
        if dfl is not None:
            logger.warning("build_loss: dfl applies to anchor-free (yolov8*) models and is ignored here")
        g, nl = ANCHOR_BASED_GAINS, head.nl
        box_gain = (g["box"] if box is None else box) * 3 / nl
        cls_gain = (g["cls"] if cls is None else cls) * head.nc / 80 * 3 / nl
        obj_gain = (g["obj"] if obj is None else obj) * (imgsz / 640) ** 2 * 3 / nl
        return AnchorBasedLoss(
            head,
            box=box_gain,
            obj=obj_gain,
            cls=cls_gain,
            cls_pw=cls_pw,
            obj_pw=obj_pw,
            anchor_t=anchor_t,
            fl_gamma=fl_gamma,
            label_smoothing=label_smoothing,
        )
    raise ValueError(
        f"build_loss: model.family must be 'anchor_free' or 'anchor_based', got {family!r}; "
        "build the model with accelyolo.models.build_model"
    )
