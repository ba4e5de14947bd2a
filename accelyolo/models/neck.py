"""Necks: PAN-FPN feature fusion, top-down (upsample + concat) then bottom-up (strided conv + concat).

The learnable blocks sit in `self.blocks` in the order of the published layer tables, so freezing
"the first n layers" past the backbone continues into the neck in a predictable order.
"""

from __future__ import annotations

import torch
from torch import nn

from accelyolo.models.layers import C3, C2f, Conv, scale_channels, scale_depth

__all__ = ["SixBlockPAN", "YOLOv5PAN", "YOLOv8PAN"]


def _up(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling, (B, C, H, W) -> (B, C, 2H, 2W)."""
    return nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")


class SixBlockPAN(nn.Module):
    """The PAN wiring of YOLOv8 and YOLO11: `blocks` = [top-down P4, top-down P3, downsample, bottom-up P4,
    downsample, bottom-up P5]; a subclass chooses the blocks."""

    blocks: nn.ModuleList

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        p3, p4, p5 = feats
        b = self.blocks
        t4 = b[0](torch.cat((_up(p5), p4), 1))
        o3 = b[1](torch.cat((_up(t4), p3), 1))
        o4 = b[3](torch.cat((b[2](o3), t4), 1))
        o5 = b[5](torch.cat((b[4](o4), p5), 1))
        return [o3, o4, o5]


class YOLOv8PAN(SixBlockPAN):
    """YOLOv8 neck: C2f blocks (no residuals) fusing P3-P5; outputs keep the backbone's channel counts.

    Args:
        width, depth, max_channels: the model scale (see `YOLOv8Backbone`).
    """

    def __init__(self, width: float, depth: float, max_channels: int) -> None:
        super().__init__()
        c3, c4, c5 = (scale_channels(x, width, max_channels) for x in (256, 512, 1024))
        n = scale_depth(3, depth)
        self.blocks = nn.ModuleList(
            [
                C2f(c5 + c4, c4, n),  # top-down P4
                C2f(c4 + c3, c3, n),  # top-down P3 -> output P3/8
                Conv(c3, c3, 3, 2),
                C2f(c3 + c4, c4, n),  # bottom-up P4 -> output P4/16
                Conv(c4, c4, 3, 2),
                C2f(c4 + c5, c5, n),  # bottom-up P5 -> output P5/32
            ]
        )
        self.out_channels = (c3, c4, c5)


class YOLOv5PAN(nn.Module):
    """YOLOv5 (v6.0+) neck: 1x1 lateral Convs and C3 blocks (no residuals) fusing P3-P5.

    Args:
        width, depth: the model scale (see `YOLOv5Backbone`).
    """

    def __init__(self, width: float, depth: float) -> None:
        super().__init__()
        c3, c4, c5 = (scale_channels(x, width) for x in (256, 512, 1024))
        n = scale_depth(3, depth)
        self.blocks = nn.ModuleList(
            [
                Conv(c5, c4, 1, 1),  # lateral P5 (layer 10)
                C3(c4 + c4, c4, n, shortcut=False),  # top-down P4 (13)
                Conv(c4, c3, 1, 1),  # lateral P4 (14)
                C3(c3 + c3, c3, n, shortcut=False),  # top-down P3 -> output P3/8 (17)
                Conv(c3, c3, 3, 2),  # (18)
                C3(c3 + c3, c4, n, shortcut=False),  # bottom-up P4 -> output P4/16 (20)
                Conv(c4, c4, 3, 2),  # (21)
                C3(c4 + c4, c5, n, shortcut=False),  # bottom-up P5 -> output P5/32 (23)
            ]
        )
        self.out_channels = (c3, c4, c5)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        p3, p4, p5 = feats
        b = self.blocks
        l5 = b[0](p5)
        l4 = b[2](b[1](torch.cat((_up(l5), p4), 1)))
        o3 = b[3](torch.cat((_up(l4), p3), 1))
        o4 = b[5](torch.cat((b[4](o3), l4), 1))
        o5 = b[7](torch.cat((b[6](o4), l5), 1))
        return [o3, o4, o5]
