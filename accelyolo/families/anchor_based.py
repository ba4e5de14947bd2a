"""The anchor-based family (YOLOv5 v6.0+): C3 backbone and PAN, anchor head, YOLOv5 loss, autoanchor."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from accelyolo.families.registry import ModelFamily, ModelSpec, register_family, register_model
from accelyolo.families.source_names import remap_layers
from accelyolo.losses.anchor_based import AnchorBasedLoss
from accelyolo.models.autoanchor import check_anchors
from accelyolo.models.backbone import YOLOv5Backbone
from accelyolo.models.heads import AnchorBasedHead
from accelyolo.models.neck import YOLOv5PAN
from accelyolo.models.yolo import STRIDES, YOLO

LOGGER = logging.getLogger("accelyolo")

# YOLOv5 default anchors (w, h pixels) for P3/8, P4/16, P5/32, fitted on COCO.
COCO_ANCHORS = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)


class AnchorBasedFamily(ModelFamily):
    name = "anchor_based"
    distill_kind = "anchor-based"
    loss_gains = {"box": 0.05, "obj": 1.0, "cls": 0.5}  # YOLOv5 hyp.scratch-low, before the scaling below
    own_options = ("obj", "obj_pw", "anchor_t")  # cls_pw, fl_gamma, label_smoothing: every family reads them

    def build(self, nc: int, width: float, depth: float, anchors: Any = COCO_ANCHORS) -> YOLO:
        """`anchors`: per level (P3, P4, P5) the anchor (w, h) pairs in pixels, as pairs or YOLOv5's flat
        `[w1, h1, w2, h2, ...]`; the same count on every level."""
        backbone = YOLOv5Backbone(width, depth)
        neck = YOLOv5PAN(width, depth)
        pairs = anchor_pairs(COCO_ANCHORS if anchors is None else anchors)
        head = AnchorBasedHead(nc, neck.out_channels, STRIDES, pairs)
        return YOLO(backbone, neck, head, family=self.name)

    def build_loss(self, model: nn.Module, hyp: Mapping[str, Any], imgsz: int) -> AnchorBasedLoss:
        """YOLOv5's loss, its gains scaled as its train.py does: box x 3/nl, cls x nc/80 x 3/nl,
        obj x (imgsz/640)^2 x 3/nl."""
        self.check_options(hyp)
        head = model.head
        nl = head.nl
        return AnchorBasedLoss(
            head,
            box=self.option(hyp, "box") * 3 / nl,
            obj=self.option(hyp, "obj") * (imgsz / 640) ** 2 * 3 / nl,
            cls=self.option(hyp, "cls") * head.nc / 80 * 3 / nl,
            cls_pw=self.option(hyp, "cls_pw"),
            obj_pw=self.option(hyp, "obj_pw"),
            anchor_t=self.option(hyp, "anchor_t"),
            fl_gamma=self.option(hyp, "fl_gamma"),
            label_smoothing=self.option(hyp, "label_smoothing"),
        )

    def prepare_for_training(
        self,
        model: nn.Module,
        labels: list[np.ndarray],
        shapes: np.ndarray | None,
        imgsz: int,
        hyp: Mapping[str, Any],
        seed: int,
    ) -> None:
        """Autoanchor: refit the anchors to the labels when their best possible recall is below 0.98."""
        report = check_anchors(model, labels, shapes, imgsz, thr=self.option(hyp, "anchor_t"), seed=seed)
        LOGGER.info(
            "autoanchor: best possible recall %.4f%s",
            report["bpr_before"],
            f" -> {report['bpr_after']:.4f} (anchors replaced)" if report["replaced"] else "",
        )

    def distill_layout(self, model: nn.Module) -> dict[str, Any]:
        """`na` predictions per grid point, one per anchor: anchor k's class logits pair with anchor k's."""
        return {"strides": tuple(model.head.strides), "anchors per cell": int(model.head.na)}

    def distill_logits(self, model: nn.Module, maps: list[torch.Tensor]) -> tuple[torch.Tensor, None]:
        """Class logits (B, N, nc) over every anchor of every cell; boxes are not distributions here."""
        b, nc = maps[0].shape[0], model.head.nc
        return torch.cat([m[..., 5:].reshape(b, -1, nc) for m in maps], 1), None

    def import_state_dict(self, source: Mapping[str, Any]) -> tuple[dict[str, Any], int] | None:
        """The YOLOv5 repository's layout (v6.0+): layers 0-9 backbone, 10/13/14/17/18/20/21/23 the PAN
        (11, 12, 15, 16, 19, 22 are Upsample/Concat), 24 the Detect layer with anchors in grid units."""
        if "model.24.anchors" not in source or "model.24.m.0.weight" not in source:
            return None
        state = remap_layers(source, YOLOV5_LAYERS, 24, _rename_v5_head)
        anchors = state["head.anchors"].float()  # (nl, na, 2) in cells of each level
        state["head.anchors"] = anchors * torch.tensor(STRIDES).view(-1, 1, 1)  # -> pixels, as our head keeps them
        na = anchors.shape[1]
        return state, int(state["head.m.0.bias"].shape[0]) // na - 5


def anchor_pairs(anchors: Any) -> list[list[list[float]]]:
    """Anchors as `(levels, na, 2)` nested lists from pairs or YOLOv5's flat per-level lists; a clear error
    for anything else (the recipe's `anchors` key)."""
    levels = len(STRIDES)
    try:
        flat = [[float(v) for v in np.asarray(level, dtype=np.float64).reshape(-1)] for level in anchors]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"anchors: expected {levels} lists of numbers (w, h pairs), got {anchors!r}") from exc
    sizes = {len(level) for level in flat}
    if len(flat) != levels or len(sizes) != 1 or sizes.pop() % 2 or not flat[0]:
        raise ValueError(
            f"anchors: expected {levels} levels (P3, P4, P5) with the same even count of numbers (w, h pairs), "
            f"e.g. [[10,13, 16,30, 33,23], [30,61, 62,45, 59,119], [116,90, 156,198, 373,326]]; got {anchors!r}"
        )
    if min(min(level) for level in flat) <= 0:
        raise ValueError(f"anchors: widths and heights must be positive, got {anchors!r}")
    return [[level[i : i + 2] for i in range(0, len(level), 2)] for level in flat]


def _rename_v5_head(rest: str) -> str | None:
    """YOLOv5's Detect: `m.<level>` 1x1 convs and `anchors`; older files also save `anchor_grid`, rebuilt here."""
    if rest.startswith("m.") or rest == "anchors":
        return f"head.{rest}"
    if rest == "anchor_grid":
        return None
    raise KeyError(f"detect layer tensor {rest!r} has no counterpart (expected m.*, anchors)")


# Source layer index -> our module, YOLOv5 v6.0+ models (yolov5n-x.yaml).
YOLOV5_LAYERS = {i: f"backbone.stages.{i}" for i in range(10)} | {
    src: f"neck.blocks.{j}" for j, src in enumerate((10, 13, 14, 17, 18, 20, 21, 23))
}

register_family(AnchorBasedFamily())

# Scales: depth, width. "t" (tiny: 1/16 width) is a public size for smoke tests and CPU demos.
for _scale, (_depth, _width) in {
    "n": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.00, 1.00),
    "x": (1.33, 1.25),
    "t": (0.33, 0.0625),
}.items():
    register_model(f"yolov5{_scale}", ModelSpec("anchor_based", _depth, _width, {"anchors": None}))
