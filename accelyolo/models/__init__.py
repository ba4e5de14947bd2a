"""YOLO models: the anchor-free (YOLOv8) and anchor-based (YOLOv5) families, a registry and utilities."""

from accelyolo.models.registry import COCO_ANCHORS, ModelSpec, build_model, list_models, model_spec, register_model
from accelyolo.models.yolo import YOLO, freeze_layers, model_info, transfer_weights

__all__ = [
    "COCO_ANCHORS",
    "YOLO",
    "ModelSpec",
    "build_model",
    "freeze_layers",
    "list_models",
    "model_info",
    "model_spec",
    "register_model",
    "transfer_weights",
]
