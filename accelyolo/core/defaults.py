"""Numbers that several modules share, each written once here and imported wherever it is used.

The largest stride fixes every input side (training, validation, prediction, export, multi-scale, the
segmentation crop); the validation NMS settings are the config's defaults, the evaluator's and the
validation command's; prediction has its own confidence and IoU. `tests/test_architecture.py` fails when a
signature or a flag writes one of these as a literal again.
"""

from __future__ import annotations

STRIDES = (8.0, 16.0, 32.0)  # pixels per cell of the P3, P4, P5 detection levels
MAX_STRIDE = int(STRIDES[-1])  # input sides are multiples of it

# Validation: every detection that could count toward mAP (COCO keeps 100 per image; YOLO trainers 300).
VAL_CONF_THRES = 0.001
VAL_IOU_THRES = 0.7
MAX_DET = 300

# `accelyolo predict`: the score at which a detection is shown to a user. A trained model whose highest
# validation score stays below it is not taken as `best` (`best_min_score`).
PREDICT_CONF = 0.25
PREDICT_IOU = 0.45


def stride_multiple(value: float) -> int:
    """`value` rounded to the nearest multiple of the largest stride, at least one stride."""
    return max(round(value / MAX_STRIDE) * MAX_STRIDE, MAX_STRIDE)


def imgsz_problem(name: str, imgsz: int) -> str | None:
    """Why `imgsz` (named `name` in the message) cannot be an input side, or None."""
    if imgsz < MAX_STRIDE or imgsz % MAX_STRIDE:
        return f"{name} must be a positive multiple of {MAX_STRIDE} (the largest stride; e.g. 320, 640), got {imgsz}"
    return None
