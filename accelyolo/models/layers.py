"""Building blocks shared by both YOLO families: Conv (BN, SiLU), Bottleneck, C2f, C3, SPPF.

Each block takes explicit channel counts; the families scale them with `scale_channels` and
`scale_depth` so that one class serves every n/s/m/l/x size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["C2f", "C3", "SPPF", "Bottleneck", "Conv", "make_divisible", "scale_channels", "scale_depth"]


def make_divisible(x: float, divisor: int = 8) -> int:
    """Round `x` up to a multiple of `divisor` (channel counts that suit hardware kernels)."""
    return int(math.ceil(x / divisor) * divisor)


def scale_channels(c: int, width: float, max_channels: int | None = None) -> int:
    """Channels of a scaled model: `c` capped at `max_channels`, times `width`, rounded up to 8."""
    if max_channels is not None:
        c = min(c, max_channels)
    return make_divisible(c * width, 8)


def scale_depth(n: int, depth: float) -> int:
    """Repeats of a scaled block: `n * depth` rounded, at least one."""
    return max(round(n * depth), 1) if n > 1 else n


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm -> SiLU; `fuse()` folds the BatchNorm into the convolution."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, groups=g, bias=False)
        # eps/momentum as the YOLO trainers set them: BN statistics follow the data faster than torch's default
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold BatchNorm into the convolution's weight and bias (inference only; training needs BN)."""
        if isinstance(self.bn, nn.Identity):
            return
        conv, bn = self.conv, self.bn
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            groups=conv.groups,
            bias=True,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (c2,)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        fused.requires_grad_(conv.weight.requires_grad)
        self.conv, self.bn = fused, nn.Identity()


class Bottleneck(nn.Module):
    """Two convolutions with an optional residual connection (kept only when shapes match)."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, k: tuple[int, int] = (3, 3), e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, k[0])
        self.cv2 = Conv(c_, c2, k[1])
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """YOLOv8 cross-stage block: split, n bottlenecks each feeding the next, concatenate every output."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, e: float = 0.5) -> None:
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, k=(3, 3), e=1.0) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, dim=1))  # 2 x (B, c, H, W)
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv2(torch.cat(y, dim=1))  # (B, (2 + n) c, H, W) -> (B, c2, H, W)


class C3(nn.Module):
    """YOLOv5 cross-stage block: a bottleneck path and a shortcut path, concatenated and mixed."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c1, c_, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, k=(1, 3), e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools (receptive fields 5, 9, 13) concatenated."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, dim=1))
