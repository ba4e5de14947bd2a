"""YOLO11 (ultralytics, 2024): C3k2 blocks, SPPF + C2PSA attention at P5, a PAN of C3k2 blocks, and the
anchor-free DFL head with a lighter class branch (depthwise 3x3 + pointwise 1x1 convolutions).

The layer order and channel counts follow the published yolo11.yaml (facts only; the code is ours):
backbone stages 0-10 (outputs of stages 4, 6, 10 are P3, P4, P5), neck blocks in table order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from accelyolo.models.backbone import _Backbone
from accelyolo.models.heads import AnchorFreeHead
from accelyolo.models.layers import SPPF, Bottleneck, Conv, scale_channels, scale_depth
from accelyolo.models.neck import SixBlockPAN

__all__ = ["C2PSA", "C3k", "C3k2", "PSABlock", "PositionAttention", "YOLO11Backbone", "YOLO11Head", "YOLO11PAN"]


def _linear_conv(c1: int, c2: int, k: int = 1, g: int = 1) -> Conv:
    """A Conv (conv + BN) without the SiLU: the projections inside the attention block."""
    conv = Conv(c1, c2, k, g=g)
    conv.act = nn.Identity()
    return conv


class C3k(nn.Module):
    """A C3 block whose bottlenecks use k x k convolutions on both sides (YOLO11's inner block)."""

    def __init__(self, c1: int, c2: int, n: int = 2, shortcut: bool = True, e: float = 0.5, k: int = 3) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c1, c_, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, k=(k, k), e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class C3k2(nn.Module):
    """YOLO11's cross-stage block: C2f's split-and-concatenate, each inner block a Bottleneck (e=0.5) or,
    with `c3k`, a C3k of two bottlenecks."""

    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5, shortcut: bool = True) -> None:
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(
            C3k(self.c, self.c, 2, shortcut) if c3k else Bottleneck(self.c, self.c, shortcut, k=(3, 3), e=0.5)
            for _ in range(n)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, dim=1))  # 2 x (B, c, H, W)
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv2(torch.cat(y, dim=1))


class PositionAttention(nn.Module):
    """Multi-head self-attention over the H x W positions of a map, plus a depthwise 3x3 positional term.

    Per head: keys and queries of `key_dim = head_dim * attn_ratio` channels, values of `head_dim`; one
    1x1 conv makes q, k, v for every head at once (channels per head: key_dim, key_dim, head_dim).
    """

    def __init__(self, dim: int, num_heads: int, attn_ratio: float = 0.5) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim**-0.5
        self.qkv = _linear_conv(dim, dim + 2 * self.key_dim * num_heads, 1)
        self.proj = _linear_conv(dim, dim, 1)
        self.pe = _linear_conv(dim, dim, 3, g=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w)
        q, k, v = qkv.split((self.key_dim, self.key_dim, self.head_dim), dim=2)  # (B, heads, d, N)
        attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)  # (B, heads, N, N)
        out = (v @ attn.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(out)


class PSABlock(nn.Module):
    """Attention then a 2x feed-forward (1x1 convs), each with a residual connection."""

    def __init__(self, c: int, num_heads: int, attn_ratio: float = 0.5) -> None:
        super().__init__()
        self.attn = PositionAttention(c, num_heads, attn_ratio)
        self.ffn = nn.Sequential(Conv(c, 2 * c, 1), _linear_conv(2 * c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.ffn(x)


class C2PSA(nn.Module):
    """Split the channels in two, run attention blocks on one half, concatenate and mix (c1 -> c1)."""

    def __init__(self, c1: int, n: int = 1, e: float = 0.5) -> None:
        super().__init__()
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        heads = max(self.c // 64, 1)  # 64 channels per head; at least one for the tiny test widths
        self.m = nn.Sequential(*(PSABlock(self.c, heads) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((a, self.m(b)), dim=1))


class YOLO11Backbone(_Backbone):
    """YOLO11 backbone: strided Convs, C3k2 blocks, SPPF and C2PSA (stage 10) at stride 32.

    Args:
        width, depth, max_channels: the model scale; `c3k` forces C3k inner blocks everywhere (m, l, x).
    """

    out_stages = (4, 6, 10)

    def __init__(self, width: float, depth: float, max_channels: int, c3k: bool) -> None:
        super().__init__()
        c = [scale_channels(x, width, max_channels) for x in (64, 128, 256, 512, 1024)]
        n = scale_depth(2, depth)
        self.stages = nn.ModuleList(
            [
                Conv(3, c[0], 3, 2),  # 0 P1/2
                Conv(c[0], c[1], 3, 2),  # 1 P2/4
                C3k2(c[1], c[2], n, c3k, e=0.25),  # 2
                Conv(c[2], c[2], 3, 2),  # 3 P3/8
                C3k2(c[2], c[3], n, c3k, e=0.25),  # 4
                Conv(c[3], c[3], 3, 2),  # 5 P4/16
                C3k2(c[3], c[3], n, True),  # 6
                Conv(c[3], c[4], 3, 2),  # 7 P5/32
                C3k2(c[4], c[4], n, True),  # 8
                SPPF(c[4], c[4], 5),  # 9
                C2PSA(c[4], n),  # 10
            ]
        )
        self.out_channels = (c[3], c[3], c[4])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_stages:
                outputs.append(x)
        return outputs[0], outputs[1], outputs[2]


class YOLO11PAN(SixBlockPAN):
    """YOLO11 neck: the YOLOv8 PAN with C3k2 blocks (C3k inner blocks at P5, or everywhere for m/l/x)."""

    def __init__(self, width: float, depth: float, max_channels: int, c3k: bool) -> None:
        super().__init__()
        c3, c4, c5 = (scale_channels(x, width, max_channels) for x in (256, 512, 1024))
        i3, i4 = c4, c4  # the backbone's P3 and P4 maps both have the 512-channel width (P5: c5)
        n = scale_depth(2, depth)
        self.blocks = nn.ModuleList(
            [
                C3k2(c5 + i4, c4, n, c3k),  # 13 top-down P4
                C3k2(c4 + i3, c3, n, c3k),  # 16 top-down P3 -> output P3/8
                Conv(c3, c3, 3, 2),  # 17
                C3k2(c3 + c4, c4, n, c3k),  # 19 bottom-up P4 -> output P4/16
                Conv(c4, c4, 3, 2),  # 20
                C3k2(c4 + c5, c5, n, True),  # 22 bottom-up P5 -> output P5/32
            ]
        )
        self.out_channels = (c3, c4, c5)


class YOLO11Head(AnchorFreeHead):
    """The anchor-free DFL head with YOLO11's class branch: twice (depthwise 3x3, pointwise 1x1), then 1x1."""

    def __init__(self, nc: int, channels: Sequence[int], strides: Sequence[float], reg_max: int = 16) -> None:
        super().__init__(nc, channels, strides, reg_max)
        c3 = max(channels[0], min(nc, 100))
        self.cls_branches = nn.ModuleList(
            nn.Sequential(
                nn.Sequential(Conv(c, c, 3, g=c), Conv(c, c3, 1)),
                nn.Sequential(Conv(c3, c3, 3, g=c3), Conv(c3, c3, 1)),
                nn.Conv2d(c3, nc, 1),
            )
            for c in channels
        )
        self.init_bias()
