"""Backbones: ten stages from the image to stride 32, returning the P3, P4, P5 feature maps.

Both families keep their stages in `self.stages` (an `nn.ModuleList`, indices 0-9 as in the published
layer tables), so `freeze_layers(model, 10)` freezes exactly the backbone, as YOLOv5's `--freeze 10` does.
"""

from __future__ import annotations

import torch
from torch import nn

from accelyolo.models.layers import C3, SPPF, C2f, Conv, scale_channels, scale_depth

__all__ = ["YOLOv5Backbone", "YOLOv8Backbone"]

# Stage channels and block repeats of the full-size (width 1, depth 1) networks.
_CHANNELS = (64, 128, 256, 512, 1024)
_REPEATS = (3, 6, 6, 3)  # YOLOv8 C2f repeats at P2..P5
_REPEATS_V5 = (3, 6, 9, 3)  # YOLOv5 C3 repeats at P2..P5


class _Backbone(nn.Module):
    """Runs the stages in order and keeps the outputs of stages 4 (P3/8), 6 (P4/16) and 9 (P5/32)."""

    stages: nn.ModuleList
    out_channels: tuple[int, int, int]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in (4, 6, 9):
                outputs.append(x)
        return outputs[0], outputs[1], outputs[2]


class YOLOv8Backbone(_Backbone):
    """YOLOv8 backbone: strided 3x3 Convs, C2f blocks with residual bottlenecks, SPPF.

    Args:
        width: channel multiplier; depth: repeat multiplier; max_channels: channel cap before `width`.
    """

    def __init__(self, width: float, depth: float, max_channels: int) -> None:
        super().__init__()
        c = [scale_channels(x, width, max_channels) for x in _CHANNELS]
        n = [scale_depth(x, depth) for x in _REPEATS]
        self.stages = nn.ModuleList(
            [
                Conv(3, c[0], 3, 2),  # 0 P1/2
                Conv(c[0], c[1], 3, 2),  # 1 P2/4
                C2f(c[1], c[1], n[0], shortcut=True),  # 2
                Conv(c[1], c[2], 3, 2),  # 3 P3/8
                C2f(c[2], c[2], n[1], shortcut=True),  # 4
                Conv(c[2], c[3], 3, 2),  # 5 P4/16
                C2f(c[3], c[3], n[2], shortcut=True),  # 6
                Conv(c[3], c[4], 3, 2),  # 7 P5/32
                C2f(c[4], c[4], n[3], shortcut=True),  # 8
                SPPF(c[4], c[4], 5),  # 9
            ]
        )
        self.out_channels = (c[2], c[3], c[4])


class YOLOv5Backbone(_Backbone):
    """YOLOv5 (v6.0+) backbone: a 6x6 stride-2 stem, strided 3x3 Convs, C3 blocks, SPPF.

    Args:
        width: channel multiplier; depth: repeat multiplier.
    """

    def __init__(self, width: float, depth: float) -> None:
        super().__init__()
        c = [scale_channels(x, width) for x in _CHANNELS]
        n = [scale_depth(x, depth) for x in _REPEATS_V5]
        self.stages = nn.ModuleList(
            [
                Conv(3, c[0], 6, 2, 2),  # 0 P1/2
                Conv(c[0], c[1], 3, 2),  # 1 P2/4
                C3(c[1], c[1], n[0]),  # 2
                Conv(c[1], c[2], 3, 2),  # 3 P3/8
                C3(c[2], c[2], n[1]),  # 4
                Conv(c[2], c[3], 3, 2),  # 5 P4/16
                C3(c[3], c[3], n[2]),  # 6
                Conv(c[3], c[4], 3, 2),  # 7 P5/32
                C3(c[4], c[4], n[3]),  # 8
                SPPF(c[4], c[4], 5),  # 9
            ]
        )
        self.out_channels = (c[2], c[3], c[4])
