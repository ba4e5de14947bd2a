"""The YOLO11 family: C3k2 / SPPF / C2PSA backbone, C3k2 PAN, DFL head with a depthwise class branch.

It trains with the anchor-free loss (TAL assignment, CIoU + DFL + BCE), exactly as YOLOv8 does, so the
family is the anchor-free one with another builder and another layout of imported checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from accelyolo.families.anchor_free import AnchorFreeFamily, rename_detect_head
from accelyolo.families.registry import ModelSpec, register_family, register_model
from accelyolo.families.source_names import remap_layers
from accelyolo.models.yolo import STRIDES, YOLO
from accelyolo.models.yolo11 import YOLO11PAN, YOLO11Backbone, YOLO11Head

# Source layer index -> our module, ultralytics yolo11n-x.yaml: 0-10 backbone, 13/16/17/19/20/22 the PAN
# (11, 12, 14, 15, 18, 21 are Upsample/Concat), 23 the Detect head.
YOLO11_LAYERS = {i: f"backbone.stages.{i}" for i in range(11)} | {
    src: f"neck.blocks.{j}" for j, src in enumerate((13, 16, 17, 19, 20, 22))
}


class YOLO11Family(AnchorFreeFamily):
    name = "yolo11"

    def build(  # type: ignore[override]
        self, nc: int, width: float, depth: float, max_channels: int = 1024, c3k: bool = False, reg_max: int = 16
    ) -> YOLO:
        backbone = YOLO11Backbone(width, depth, max_channels, c3k)
        neck = YOLO11PAN(width, depth, max_channels, c3k)
        head = YOLO11Head(nc, neck.out_channels, STRIDES, reg_max)
        return YOLO(backbone, neck, head, family=self.name)

    def import_state_dict(self, source: Mapping[str, Any]) -> tuple[dict[str, Any], int] | None:
        if not {"model.23.dfl.conv.weight", "model.10.m.0.attn.qkv.conv.weight"} <= set(source):
            return None
        state = remap_layers(source, YOLO11_LAYERS, 23, rename_detect_head)
        return state, int(state["head.cls_branches.0.2.bias"].shape[0])


register_family(YOLO11Family())

# Scales: depth, width, max channels, C3k inner blocks everywhere (ultralytics turns them on for m, l, x).
# "t" (tiny: 1/8 width) is for smoke tests and CPU demos.
for _scale, (_depth, _width, _max_channels, _c3k) in {
    "n": (0.50, 0.25, 1024, False),
    "s": (0.50, 0.50, 1024, False),
    "m": (0.50, 1.00, 512, True),
    "l": (1.00, 1.00, 512, True),
    "x": (1.00, 1.50, 512, True),
    "t": (0.50, 0.125, 1024, False),
}.items():
    register_model(f"yolo11{_scale}", ModelSpec("yolo11", _depth, _width, {"max_channels": _max_channels, "c3k": _c3k}))
