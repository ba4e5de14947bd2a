"""Model building blocks: layers, backbones, necks, heads and the `YOLO` container, plus utilities.

Named variants (`yolov8n`, `yolov5s`, ...) and `build_model` live in `accelyolo.families`.
"""

from accelyolo.models.yolo import YOLO, freeze_layers, model_info, transfer_weights

__all__ = ["YOLO", "freeze_layers", "model_info", "transfer_weights"]
