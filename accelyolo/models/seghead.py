"""Semantic segmentation head on a detector's neck: per-pixel class logits at the input resolution.

Design (light on purpose; the neck already fuses the scales): the stride-16 neck output is projected
by a 1x1 Conv to `hidden` channels and upsampled 2x, the stride-8 output is projected by its own 1x1
Conv, the two are added (an FPN-style merge), one 3x3 Conv refines the sum, a 1x1 convolution (with
bias) gives `num_classes` logits at stride 8, and bilinear upsampling brings them to the input size.
`hidden` defaults to the stride-8 channel count. Parameters for K classes with channels (c3, c4) and
hidden h: `c4*h + c3*h + 9*h*h + 6*h` (Conv weights + BatchNorm) `+ h*K + K`; e.g. yolov8n
(c3 64, c4 128, h 64), K 19: 50,771; yolov8t and yolov5t (c3 16, c4 32), K 19: 3,491.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from accelyolo.models.layers import Conv

__all__ = ["SegmentationHead"]


class SegmentationHead(nn.Module):
    """Stride-8 + stride-16 neck maps -> (B, K, H, W) logits at the input size `(H, W)`.

    Args:
        num_classes: K, segmentation classes (ignore pixels are not a class).
        channels: channels of the stride-8 and stride-16 neck outputs (the neck's first two).
        hidden: width of the merged features (default: the stride-8 channels).
    """

    def __init__(self, num_classes: int, channels: Sequence[int], hidden: int | None = None) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"SegmentationHead: num_classes must be >= 2 (background + a class), got {num_classes}")
        c3, c4 = int(channels[0]), int(channels[1])
        hidden = int(hidden or c3)
        self.num_classes = int(num_classes)
        self.lateral8 = Conv(c3, hidden, 1)
        self.lateral16 = Conv(c4, hidden, 1)
        self.refine = Conv(hidden, hidden, 3)
        self.classify = nn.Conv2d(hidden, self.num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        p8, p16 = feats[0], feats[1]  # (B, c3, H/8, W/8), (B, c4, H/16, W/16)
        up = nn.functional.interpolate(self.lateral16(p16), size=p8.shape[2:], mode="nearest")
        logits = self.classify(self.refine(self.lateral8(p8) + up))  # (B, K, H/8, W/8)
        return nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
