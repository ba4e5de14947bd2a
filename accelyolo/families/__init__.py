"""Model families and the named variants they register (see `registry`).

Importing this package registers the shipped families: `anchor_free` (yolov8n..x), `anchor_based`
(yolov5n..x) and `yolo11` (yolo11n..x). A new family is a module that subclasses `ModelFamily`,
registers it and its variants.
"""

from accelyolo.families import anchor_based, anchor_free, yolo11  # noqa: F401  (they register themselves)
from accelyolo.families.anchor_based import COCO_ANCHORS
from accelyolo.families.registry import (
    ModelFamily,
    ModelSpec,
    build_loss,
    build_model,
    family_of,
    get_family,
    list_families,
    list_models,
    model_spec,
    register_family,
    register_model,
)

__all__ = [
    "COCO_ANCHORS",
    "ModelFamily",
    "ModelSpec",
    "build_loss",
    "build_model",
    "family_of",
    "get_family",
    "list_families",
    "list_models",
    "model_spec",
    "register_family",
    "register_model",
]
