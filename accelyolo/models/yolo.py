"""The detector (`YOLO` = backbone + neck + head) and model utilities: fuse, info, transfer, freeze."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from accelyolo.core.defaults import MAX_STRIDE, STRIDES, imgsz_problem
from accelyolo.models.layers import Conv
from accelyolo.models.seghead import SegmentationHead

__all__ = ["STRIDES", "YOLO", "freeze_layers", "model_info", "transfer_weights"]

logger = logging.getLogger(__name__)


class YOLO(nn.Module):
    """A YOLO detector: backbone -> neck -> head, built by a model family (`accelyolo.families`).

    Args:
        backbone: maps (B, 3, H, W) to feature maps; has `.stages` (an `nn.ModuleList`).
        neck: maps the backbone's outputs to one map per level; has `.blocks` and `.out_channels`.
        head: turns the level maps into raw maps (train) or decoded detections (eval); has `.nc`
            and `.strides`.
        family: the registered family name that built it (`accelyolo.families.family_of` reads it).
        config: the `build_model` keywords that rebuild this architecture (kept as `self.config`).

    Input (B, 3, H, W) in [0, 1] with H, W multiples of 32. Train mode returns the head's raw maps;
    eval mode returns (B, N, 4 + nc) boxes xywh in pixels and per-class scores.

    A multi-task model also has `seg_head` (a `SegmentationHead` on the stride-8 and stride-16 neck
    outputs, added by `add_segmentation_head`); `model(x)` still returns the detections only,
    `model(x, seg_x)` returns `(detections, seg_logits)` with logits (B, K, H', W') at `seg_x`'s size
    (one call, so DDP sees every parameter used), and `segment(x)` the logits alone. `model(x, x)`
    runs the backbone once for both outputs. A model without the head has no `seg_head` attribute
    at all: its parameters, state dict and outputs are those of a plain detector.
    """

    def __init__(
        self, backbone: nn.Module, neck: nn.Module, head: nn.Module, family: str, config: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        if head.nc < 1:
            raise ValueError(f"YOLO: nc (number of classes) must be >= 1, got {head.nc}")
        self.family, self.nc = family, head.nc
        self.config: dict[str, Any] = dict(config or {})
        self.backbone, self.neck, self.head = backbone, neck, head
        self.register_buffer("stride", torch.tensor(head.strides), persistent=False)

    def forward(self, x: torch.Tensor, seg_x: torch.Tensor | None = None) -> Any:
        _check_input(x)
        feats = self.neck(self.backbone(x))
        if seg_x is None:
            return self.head(feats)
        if not hasattr(self, "seg_head"):
            raise ValueError("YOLO: a segmentation input was given but this model has no segmentation head")
        seg_feats = feats if seg_x is x else self.neck(self.backbone(_check_input(seg_x)))
        return self.head(feats), self.seg_head(seg_feats, tuple(seg_x.shape[2:]))

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits (B, K, H, W) of a multi-task model."""
        if not hasattr(self, "seg_head"):
            raise ValueError("YOLO.segment: this model has no segmentation head (build it with seg_classes=K)")
        return self.seg_head(self.neck(self.backbone(_check_input(x))), tuple(x.shape[2:]))

    def add_segmentation_head(self, num_classes: int) -> YOLO:
        """Attach a `SegmentationHead` of `num_classes` on the neck's stride-8 and stride-16 outputs."""
        self.seg_head = SegmentationHead(num_classes, self.neck.out_channels[:2])
        self.seg_classes = num_classes
        return self

    def fuse(self) -> YOLO:
        """Fold every Conv's BatchNorm into its convolution (faster inference; do not train afterwards)."""
        for module in self.modules():
            if isinstance(module, Conv):
                module.fuse()
        return self

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The model's layers in order (backbone stages, then neck blocks), named as in the state dict."""
        out = [(f"backbone.stages.{i}", m) for i, m in enumerate(self.backbone.stages)]
        out += [(f"neck.blocks.{i}", m) for i, m in enumerate(self.neck.blocks)]
        return out


def _check_input(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % MAX_STRIDE or x.shape[3] % MAX_STRIDE:
        raise ValueError(f"YOLO: input must be (B, 3, H, W) with H, W multiples of {MAX_STRIDE}, got {tuple(x.shape)}")
    return x


def _flops(model: nn.Module, imgsz: int) -> float:
    """GFLOPs (FlopCounterMode total / 1e9, 2 per multiply-add) of one (1, 3, imgsz, imgsz) forward pass.

    Runs on a `meta` twin of the model (a copy moved to `meta`), so nothing is computed, no device
    memory is used and the real weights are untouched.
    """
    from torch.utils.flop_counter import FlopCounterMode

    meta = model if next(model.parameters()).device.type == "meta" else copy.deepcopy(model).to("meta")
    meta.train(model.training)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta(torch.empty(1, 3, imgsz, imgsz, device="meta"))
    return counter.get_total_flops() / 1e9


def model_info(
    model: nn.Module, imgsz: int = 640, print_fn: Callable[[str], None] | None = None
) -> dict[str, float | int]:
    """Layers, parameters, trainable parameters and GFLOPs at `imgsz`; prints one line if `print_fn` is given.

    Returns:
        {"layers": modules, "parameters": n, "gradients": n requiring grad, "gflops": float}.
    """
    if problem := imgsz_problem("model_info: imgsz", imgsz):
        raise ValueError(problem)
    info = {
        "layers": len(list(model.modules())),
        "parameters": sum(p.numel() for p in model.parameters()),
        "gradients": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "gflops": round(_flops(model, imgsz), 3),
    }
    if print_fn is not None:
        name = getattr(model, "config", {}).get("name", type(model).__name__)
        print_fn(
            f"{name}: {info['layers']} layers, {info['parameters']:,} parameters, "
            f"{info['gradients']:,} gradients, {info['gflops']:.1f} GFLOPs at {imgsz} px"
        )
    return info


def transfer_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """Copy the tensors of `state_dict` whose names and shapes match the model's (e.g. another nc).

    Returns:
        (moved, total): tensors copied and tensors in the model's state dict. Mismatches are skipped and
        counted in the log line, so a new head for a different class count trains from its initialisation.
    """
    own = model.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(matched, strict=False)
    skipped = len(state_dict) - len(matched)
    logger.info(
        "transferred %d/%d tensors (%d in the source skipped: missing or reshaped)", len(matched), len(own), skipped
    )
    return len(matched), len(own)


def freeze_layers(model: nn.Module, n: int) -> list[str]:
    """Stop gradients for the first `n` layers (backbone stages 0-9, then neck blocks).

    `n = 10` freezes the whole backbone, as YOLOv5's `--freeze 10`. Returns the frozen parameter names.
    """
    stages = model.stages()
    if not 0 <= n <= len(stages):
        raise ValueError(f"freeze_layers: n must be between 0 and {len(stages)} (layers of this model), got {n}")
    frozen = []
    for prefix, module in stages[:n]:
        for name, p in module.named_parameters():
            p.requires_grad_(False)
            frozen.append(f"{prefix}.{name}")
    return frozen
