"""The hyperparameter table: every YOLOv5-named hyperparameter, its default and its meaning, in one place.

`TrainConfig` takes its `hyp` fields from here, the augmentation pipeline its defaults, and recipe
validation its list of names (a `hyp:` key that is not in this table is an error). Defaults are YOLOv5's
hyp.scratch-low; a loss gain of `None` means "the model family's default" (`accelyolo.families`).
"""

from __future__ import annotations

from typing import NamedTuple


class Hyp(NamedTuple):
    default: float | None
    help: str


HYPERPARAMETERS: dict[str, Hyp] = {
    # optimizer and schedule
    "lr0": Hyp(0.01, "initial learning rate"),
    "lrf": Hyp(0.01, "final LR as a fraction of lr0"),
    "momentum": Hyp(0.937, "SGD momentum / Adam beta1"),
    "weight_decay": Hyp(0.0005, "weight decay at the nominal batch"),
    "warmup_epochs": Hyp(3.0, "warmup epochs (fractions allowed, 0 = none)"),
    "warmup_momentum": Hyp(0.8, "initial warmup momentum"),
    "warmup_bias_lr": Hyp(0.1, "initial warmup LR of the bias group"),
    # loss
    "box": Hyp(None, "box loss gain (empty = the model family's default)"),
    "cls": Hyp(None, "class loss gain (empty = the model family's default)"),
    "dfl": Hyp(None, "DFL loss gain, anchor-free models (empty = the family's default)"),
    "obj": Hyp(None, "objectness loss gain, anchor-based models (empty = the family's default)"),
    "cls_pw": Hyp(1.0, "class BCE positive weight"),
    "obj_pw": Hyp(1.0, "objectness BCE positive weight, anchor-based models"),
    "anchor_t": Hyp(4.0, "anchor-multiple threshold, anchor-based models"),
    "fl_gamma": Hyp(0.0, "focal loss gamma (0 = plain BCE)"),
    "label_smoothing": Hyp(0.0, "label smoothing epsilon of the class targets"),
    "tal_min_side": Hyp(
        16.0, "anchor-free models: the smallest box side (px) in the assigner's candidate test (0 = the real box)"
    ),
    # augmentation
    "hsv_h": Hyp(0.015, "hue jitter (fraction)"),
    "hsv_s": Hyp(0.7, "saturation jitter (fraction)"),
    "hsv_v": Hyp(0.4, "value jitter (fraction)"),
    "degrees": Hyp(0.0, "rotation (+/- degrees)"),
    "translate": Hyp(0.1, "translation (+/- fraction)"),
    "scale": Hyp(0.5, "scale (+/- gain)"),
    "shear": Hyp(0.0, "shear (+/- degrees)"),
    "perspective": Hyp(0.0, "perspective (+/- fraction)"),
    "flipud": Hyp(0.0, "vertical flip probability"),
    "fliplr": Hyp(0.5, "horizontal flip probability"),
    "mosaic": Hyp(1.0, "mosaic probability"),
    "mixup": Hyp(0.0, "mixup probability"),
    "crop": Hyp(0.0, "bbox-safe random crop probability (non-mosaic samples; every box kept)"),
    "crop_erosion": Hyp(0.0, "fraction of a box the crop may cut away (0 = every box whole)"),
}

AUGMENTATION_KEYS = (
    "hsv_h",
    "hsv_s",
    "hsv_v",
    "degrees",
    "translate",
    "scale",
    "shear",
    "perspective",
    "flipud",
    "fliplr",
    "mosaic",
    "mixup",
    "crop",
    "crop_erosion",
)


def augmentation_defaults() -> dict[str, float]:
    """The augmentation hyperparameters with their defaults."""
    return {key: float(HYPERPARAMETERS[key].default) for key in AUGMENTATION_KEYS}


class Limit(NamedTuple):
    """How `accelyolo evolve` mutates one hyperparameter.

    `gain` scales the mutation (0 = never mutated); the mutated value is clipped to [`low`, `high`].
    With `relative` the limits are multiples of the starting value (the loss gains, whose defaults
    differ per model family: YOLOv5 box 0.05, YOLOv8 box 7.5).
    """

    gain: float
    low: float
    high: float
    relative: bool = False


# Mutation gains and limits of hyperparameter evolution (YOLOv5's table; the loss gains relative to their
# family default, spanning YOLOv5's absolute ranges). A hyperparameter absent here is never evolved.
MUTATION_LIMITS: dict[str, Limit] = {
    "lr0": Limit(1.0, 1e-5, 1e-1),
    "lrf": Limit(1.0, 0.01, 1.0),
    "momentum": Limit(0.3, 0.6, 0.98),
    "weight_decay": Limit(1.0, 0.0, 0.001),
    "warmup_epochs": Limit(1.0, 0.0, 5.0),
    "warmup_momentum": Limit(1.0, 0.0, 0.95),
    "warmup_bias_lr": Limit(1.0, 0.0, 0.2),
    "box": Limit(1.0, 0.4, 4.0, relative=True),
    "cls": Limit(1.0, 0.4, 8.0, relative=True),
    "dfl": Limit(1.0, 0.4, 4.0, relative=True),
    "obj": Limit(1.0, 0.2, 4.0, relative=True),
    "cls_pw": Limit(1.0, 0.5, 2.0),
    "obj_pw": Limit(1.0, 0.5, 2.0),
    "anchor_t": Limit(1.0, 2.0, 8.0),
    "fl_gamma": Limit(0.0, 0.0, 2.0),
    "tal_min_side": Limit(0.0, 0.0, 32.0),
    "hsv_h": Limit(1.0, 0.0, 0.1),
    "hsv_s": Limit(1.0, 0.0, 0.9),
    "hsv_v": Limit(1.0, 0.0, 0.9),
    "degrees": Limit(1.0, 0.0, 45.0),
    "translate": Limit(1.0, 0.0, 0.9),
    "scale": Limit(1.0, 0.0, 0.9),
    "shear": Limit(1.0, 0.0, 10.0),
    "perspective": Limit(0.0, 0.0, 0.001),
    "flipud": Limit(1.0, 0.0, 1.0),
    "fliplr": Limit(0.0, 0.0, 1.0),
    "mosaic": Limit(1.0, 0.0, 1.0),
    "mixup": Limit(1.0, 0.0, 1.0),
    "crop": Limit(1.0, 0.0, 1.0),
    "crop_erosion": Limit(1.0, 0.0, 0.5),
}
