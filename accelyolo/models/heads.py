"""Detection heads: the anchor-free decoupled DFL head (YOLOv8) and the anchor-based head (YOLOv5).

Train mode returns raw per-level maps for the loss; eval mode decodes them into one tensor
(B, N, 4 + nc): boxes xywh in input pixels, then per-class scores in [0, 1], ready for NMS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from accelyolo.models.layers import Conv

__all__ = ["AnchorBasedHead", "AnchorFreeHead", "make_anchor_points", "make_grid"]


def make_anchor_points(
    shapes: Sequence[tuple[int, int]], strides: Sequence[float], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres of every level, in grid units, and each cell's stride.

    Args:
        shapes: (H, W) of each level's feature map.
        strides: pixels per cell of each level.

    Returns:
        points (N, 2) x, y cell centres (index + 0.5) and strides (N, 1), N = sum of H * W.
    """
    points, stride_list = [], []
    for (h, w), s in zip(shapes, strides):
        # counted in float32 and then cast: the ONNX exporter has no float16 `arange` (a `--half` export)
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5).to(dtype)
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5).to(dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((gx, gy), -1).view(-1, 2))
        stride_list.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_list)


def make_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Cell indices of one level as (1, 1, H, W, 2) x, y, for the anchor-based decode."""
    ys = torch.arange(h, device=device, dtype=torch.float32).to(dtype)  # float32 first, as above
    xs = torch.arange(w, device=device, dtype=torch.float32).to(dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), -1).view(1, 1, h, w, 2)


class AnchorFreeHead(nn.Module):
    """YOLOv8 decoupled head: per level a box branch (4 x reg_max distance bins) and a class branch.

    Boxes are distances (left, top, right, bottom) from the cell centre, each a softmax over `reg_max`
    bins whose expectation is the distance in cells (Distribution Focal Loss, DFL).

    Args:
        nc: number of classes.
        channels: input channels of each level (P3, P4, P5).
        strides: pixels per cell of each level.
        reg_max: distance bins per side.
    """

    def __init__(self, nc: int, channels: Sequence[int], strides: Sequence[float], reg_max: int = 16) -> None:
        super().__init__()
        self.nc, self.reg_max, self.nl = nc, reg_max, len(channels)
        self.no = 4 * reg_max + nc  # outputs per cell
        self.strides = tuple(float(s) for s in strides)
        c2 = max(16, channels[0] // 4, 4 * reg_max)
        c3 = max(channels[0], min(nc, 100))
        self.box_branches = nn.ModuleList(
            nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for c in channels
        )
        self.cls_branches = nn.ModuleList(
            nn.Sequential(Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for c in channels
        )
        # The DFL expectation: a fixed projection of the bins onto 0..reg_max-1 (not learned, not saved).
        self.register_buffer("proj", torch.arange(reg_max, dtype=torch.float32), persistent=False)
        self.init_bias()

    @torch.no_grad()
    def init_bias(self) -> None:
        """Box bias 1; class bias for a prior of about 5 objects per class in a 640 px image."""
        for box, cls, s in zip(self.box_branches, self.cls_branches, self.strides):
            box[-1].bias.fill_(1.0)
            cls[-1].bias.fill_(math.log(5 / self.nc / (640 / s) ** 2))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        out = self.raw_maps(feats)
        return out if self.training else self.decode(out)

    def raw_maps(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The undecoded level maps, each (B, 4 * reg_max + nc, H, W), in train and eval mode alike
        (a distillation teacher runs in eval mode and still hands these to the loss)."""
        return [torch.cat((box(x), cls(x)), 1) for x, box, cls in zip(feats, self.box_branches, self.cls_branches)]

    def decode(self, out: list[torch.Tensor]) -> torch.Tensor:
        """Raw level maps -> (B, N, 4 + nc): boxes xywh in input pixels, sigmoid class scores."""
        b = out[0].shape[0]
        x = torch.cat([o.view(b, self.no, -1) for o in out], 2)  # (B, no, N)
        dist, cls = x.split((4 * self.reg_max, self.nc), 1)
        points, strides = make_anchor_points([o.shape[2:] for o in out], self.strides, x.device, x.dtype)
        # The expectation over the bins as a 1x1 convolution of the softmax, (B, reg_max, 4, N) -> (B, 4, N) in
        # cells: the same sum as an einsum, in the summation order YOLOv8 uses, so imported models agree exactly.
        dist = dist.view(b, 4, self.reg_max, -1).transpose(1, 2).softmax(1)  # (B, reg_max, 4, N)
        weight = self.proj.to(dist.dtype).view(1, self.reg_max, 1, 1)
        ltrb = nn.functional.conv2d(dist, weight).view(b, 4, -1)
        lt, rb = ltrb.chunk(2, 1)
        # via the corners, in the order YOLOv8 evaluates it (float32 rounding as theirs)
        top_left, bottom_right = points.T.unsqueeze(0) - lt, points.T.unsqueeze(0) + rb  # (B, 2, N) cells
        centre, size = (top_left + bottom_right) / 2, bottom_right - top_left
        boxes = torch.cat((centre, size), 1) * strides.T.unsqueeze(0)  # (B, 4, N) pixels
        return torch.cat((boxes, cls.sigmoid()), 1).transpose(1, 2)  # (B, N, 4 + nc)


class AnchorBasedHead(nn.Module):
    """YOLOv5 detect layers: per level a 1x1 conv predicting, per anchor, xywh, objectness and classes.

    Anchors are a registered buffer in pixels (nl, na, 2), so they live in the state dict and in
    checkpoints, and autoanchor can replace them.

    Args:
        nc: number of classes.
        channels: input channels of each level (P3, P4, P5).
        strides: pixels per cell of each level.
        anchors: (nl, na, 2) anchor widths and heights in pixels, smallest level first.
    """

    def __init__(
        self, nc: int, channels: Sequence[int], strides: Sequence[float], anchors: Sequence[Sequence[float]]
    ) -> None:
        super().__init__()
        anchor_tensor = torch.tensor(anchors, dtype=torch.float32).view(len(channels), -1, 2)
        self.nc, self.nl, self.na = nc, len(channels), anchor_tensor.shape[1]
        self.no = 5 + nc
        self.strides = tuple(float(s) for s in strides)
        self.register_buffer("anchors", anchor_tensor)  # (nl, na, 2) pixels
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in channels)
        self.init_bias()

    @torch.no_grad()
    def init_bias(self) -> None:
        """Objectness prior of 8 objects per 640 px image; class prior 0.6 / (nc - 0.99), as YOLOv5."""
        for conv, s in zip(self.m, self.strides):
            b = conv.bias.view(self.na, -1)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5:] += math.log(0.6 / (self.nc - 0.99))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        out = self.raw_maps(feats)
        return out if self.training else self.decode(out)

    def raw_maps(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The undecoded level maps, each (B, na, H, W, 5 + nc), in train and eval mode alike."""
        out = []
        for x, conv in zip(feats, self.m):
            b, _, h, w = x.shape
            out.append(conv(x).view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return out

    def decode(self, out: list[torch.Tensor]) -> torch.Tensor:
        """Raw level maps -> (B, N, 4 + nc): boxes xywh in input pixels, scores = objectness x class prob."""
        levels = []
        for i, p in enumerate(out):
            b, _, h, w, _ = p.shape
            y = p.sigmoid()
            grid = make_grid(h, w, p.device, y.dtype) - 0.5
            xy = (y[..., :2] * 2 + grid) * self.strides[i]  # (B, na, H, W, 2)
            wh = (y[..., 2:4] * 2) ** 2 * self.anchors[i].to(y.dtype).view(1, self.na, 1, 1, 2)
            scores = y[..., 4:5] * y[..., 5:]
            levels.append(torch.cat((xy, wh, scores), -1).view(b, -1, 4 + self.nc))
        return torch.cat(levels, 1)
