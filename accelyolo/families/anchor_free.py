"""The anchor-free family (YOLOv8): C2f backbone and PAN, decoupled DFL head, TAL + CIoU + DFL + BCE loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from accelyolo.families.registry import ModelFamily, ModelSpec, register_family, register_model
from accelyolo.families.source_names import layer_indices, remap_layers
from accelyolo.losses.anchor_free import AnchorFreeLoss
from accelyolo.models.backbone import YOLOv8Backbone
from accelyolo.models.heads import AnchorFreeHead
from accelyolo.models.neck import YOLOv8PAN
from accelyolo.models.yolo import STRIDES, YOLO


class AnchorFreeFamily(ModelFamily):
    name = "anchor_free"
    distill_kind = "anchor-free"
    loss_gains = {"box": 7.5, "cls": 0.5, "dfl": 1.5}  # YOLOv8's defaults
    own_options = ("dfl", "tal_min_side")

    def build(self, nc: int, width: float, depth: float, max_channels: int = 1024, reg_max: int = 16) -> YOLO:
        backbone = YOLOv8Backbone(width, depth, max_channels)
        neck = YOLOv8PAN(width, depth, max_channels)
        head = AnchorFreeHead(nc, neck.out_channels, STRIDES, reg_max)
        return YOLO(backbone, neck, head, family=self.name)

    def build_loss(self, model: nn.Module, hyp: Mapping[str, Any], imgsz: int) -> AnchorFreeLoss:
        self.check_options(hyp)
        return AnchorFreeLoss(
            model.head,
            box=self.option(hyp, "box"),
            cls=self.option(hyp, "cls"),
            dfl=self.option(hyp, "dfl"),
            cls_pw=self.option(hyp, "cls_pw"),
            fl_gamma=self.option(hyp, "fl_gamma"),
            label_smoothing=self.option(hyp, "label_smoothing"),
            min_side=self.option(hyp, "tal_min_side"),
        )

    def distill_layout(self, model: nn.Module) -> dict[str, Any]:
        """One prediction per grid point, boxes as `reg_max` bins per side (yolov8 and yolo11 alike)."""
        return {"strides": tuple(model.head.strides), "reg_max": int(model.head.reg_max)}

    def distill_logits(self, model: nn.Module, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, N, nc) and the DFL bin logits of each box side (B, N, 4, reg_max)."""
        head = model.head
        b = maps[0].shape[0]
        x = torch.cat([m.reshape(b, head.no, -1) for m in maps], 2).transpose(1, 2)  # (B, N, no)
        box, cls = x.split((4 * head.reg_max, head.nc), -1)
        return cls, box.reshape(b, -1, 4, head.reg_max)

    def import_state_dict(self, source: Mapping[str, Any]) -> tuple[dict[str, Any], int] | None:
        """ultralytics' YOLOv8 detection layout: layers 0-9 backbone, 12/15/16/18/19/21 the PAN blocks
        (10, 11, 13, 14, 17, 20 are Upsample/Concat), 22 the Detect head."""
        if not {"model.22.dfl.conv.weight", "model.21.cv1.conv.weight"} <= set(source) or 23 in layer_indices(source):
            return None
        state = remap_layers(source, YOLOV8_LAYERS, 22, rename_detect_head)
        return state, int(state["head.cls_branches.0.2.bias"].shape[0])


def rename_detect_head(rest: str) -> str | None:
    """ultralytics' Detect names -> ours: `cv2.<level>` box branch, `cv3.<level>` class branch; the DFL
    projection (`dfl.conv.weight`, a fixed 0..reg_max-1 ramp) is a non-saved buffer here."""
    branch, _, tail = rest.partition(".")
    if branch == "cv2":
        return f"head.box_branches.{tail}"
    if branch == "cv3":
        return f"head.cls_branches.{tail}"
    if branch == "dfl":
        return None
    raise KeyError(f"detect head tensor {rest!r} has no counterpart (expected cv2.*, cv3.*, dfl.*)")


# Source layer index -> our module, YOLOv8 detection models (yolov8n-x.yaml).
YOLOV8_LAYERS = {i: f"backbone.stages.{i}" for i in range(10)} | {
    src: f"neck.blocks.{j}" for j, src in enumerate((12, 15, 16, 18, 19, 21))
}

register_family(AnchorFreeFamily())

# Scales: depth, width, max channels. "t" (tiny: 1/16 width) is a public size for smoke tests and CPU demos.
for _scale, (_depth, _width, _max_channels) in {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.25, 512),
    "t": (0.33, 0.0625, 1024),
}.items():
    register_model(f"yolov8{_scale}", ModelSpec("anchor_free", _depth, _width, {"max_channels": _max_channels}))
