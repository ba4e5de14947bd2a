"""Box conversions, IoU variants and non-maximum suppression: the one home of box arithmetic.

Boxes are `xyxy` (corners) or `xywh` (centre, width, height) in the last dimension; YOLO label rows
are `xywh` normalized by the image size. The conversions take a torch tensor or a numpy array and
return the same kind (tensors go through `torchvision.ops.box_convert`). The IoU variants (GIoU,
DIoU, CIoU) follow their papers; NMS runs through `torchvision.ops.batched_nms`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
import torchvision
from torchvision.ops import box_convert

from accelyolo.core.defaults import MAX_DET, VAL_CONF_THRES, VAL_IOU_THRES

__all__ = [
    "bbox_iou",
    "box_iou",
    "clip_boxes",
    "non_max_suppression",
    "scale_boxes",
    "xywh2xyxy",
    "xywhn2xyxy",
    "xyxy2xywh",
]

Boxes = TypeVar("Boxes", torch.Tensor, np.ndarray)


def xywh2xyxy(x: Boxes) -> Boxes:
    """Centre/size boxes (..., 4+) to corner boxes (..., 4); a new tensor or array of the input's kind.

    Columns after the fourth (e.g. a class id) are ignored.
    """
    if isinstance(x, torch.Tensor):
        return box_convert(x[..., :4], in_fmt="cxcywh", out_fmt="xyxy")
    xy, wh = x[..., :2], x[..., 2:4] / 2  # same arithmetic as box_convert: c -/+ 0.5 * size
    return np.concatenate((xy - wh, xy + wh), axis=-1)


def xyxy2xywh(x: Boxes) -> Boxes:
    """Corner boxes (..., 4+) to centre/size boxes (..., 4); a new tensor or array of the input's kind.

    Columns after the fourth (e.g. a class id) are ignored.
    """
    if isinstance(x, torch.Tensor):
        x = x[..., :4] if x.is_floating_point() else x[..., :4].float()
        return box_convert(x, in_fmt="xyxy", out_fmt="cxcywh")
    x1y1, x2y2 = x[..., :2], x[..., 2:4]
    return np.concatenate(((x1y1 + x2y2) / 2, x2y2 - x1y1), axis=-1)


def xywhn2xyxy(x: Boxes, w: float, h: float) -> Boxes:
    """YOLO rows: normalized centre/size boxes (..., 4+) to pixel corner boxes (..., 4) in a `w x h` image.

    A numpy input keeps its dtype (float32 labels stay float32).
    """
    if isinstance(x, torch.Tensor):
        scale = torch.tensor([w, h, w, h], dtype=x.dtype, device=x.device)
    else:
        scale = np.array([w, h, w, h], dtype=x.dtype)
    return xywh2xyxy(x[..., :4] * scale)


def box_iou(box1: torch.Tensor, box2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes (N, 4) and (M, 4) -> (N, M)."""
    return torchvision.ops.box_iou(box1, box2)


def bbox_iou(
    box1: torch.Tensor, box2: torch.Tensor, xywh: bool = False, kind: str = "iou", eps: float = 1e-7
) -> torch.Tensor:
    """Element-wise (broadcast) IoU of boxes (..., 4) and (..., 4) -> (...).

    Args:
        box1, box2: boxes that broadcast against each other.
        xywh: the boxes are centre/size; otherwise corners.
        kind: "iou", "giou" (minus the empty share of the enclosing box), "diou" (minus the squared centre
            distance over the enclosing diagonal squared) or "ciou" (DIoU minus an aspect-ratio term).
        eps: keeps divisions finite for empty boxes.
    """
    if kind not in ("iou", "giou", "diou", "ciou"):
        raise ValueError(f"bbox_iou: kind must be one of iou, giou, diou, ciou; got {kind!r}")
    if xywh:
        box1, box2 = xywh2xyxy(box1), xywh2xyxy(box2)
    b1_x1, b1_y1, b1_x2, b1_y2 = box1.unbind(-1)
    b2_x1, b2_y1, b2_x2, b2_y2 = box2.unbind(-1)
    w1, h1 = b1_x2 - b1_x1, (b1_y2 - b1_y1).clamp(min=eps)
    w2, h2 = b2_x2 - b2_x1, (b2_y2 - b2_y1).clamp(min=eps)
    inter = (torch.minimum(b1_x2, b2_x2) - torch.maximum(b1_x1, b2_x1)).clamp(min=0) * (
        torch.minimum(b1_y2, b2_y2) - torch.maximum(b1_y1, b2_y1)
    ).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if kind == "iou":
        return iou
    cw = torch.maximum(b1_x2, b2_x2) - torch.minimum(b1_x1, b2_x1)  # enclosing box width
    ch = torch.maximum(b1_y2, b2_y2) - torch.minimum(b1_y1, b2_y1)
    if kind == "giou":
        c_area = cw * ch + eps
        return iou - (c_area - union) / c_area
    c2 = cw**2 + ch**2 + eps  # enclosing diagonal squared
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
    if kind == "diou":
        return iou - rho2 / c2
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():  # alpha is a weight, not a path for gradients (as in the CIoU paper)
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def clip_boxes(boxes: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Clip xyxy boxes (..., 4) in place to an image of `shape` (h, w); returns them."""
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, shape[1])
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, shape[0])
    return boxes


def scale_boxes(boxes: torch.Tensor, ratio_pad: Sequence, orig_shape: Sequence[int]) -> torch.Tensor:
    """Map xyxy boxes from a letterboxed image back to the original image, clipped to it.

    Args:
        boxes: (n, 4) x1 y1 x2 y2 in letterboxed pixels.
        ratio_pad: `((ry, rx), (pad_w, pad_h))` as the dataset records it: the resize ratios (new / original)
            and the left/top padding. A single number for the ratio means the same ratio on both axes.
        orig_shape: (h0, w0) of the original image.

    Returns:
        A new (n, 4) tensor in original-image pixels.
    """
    ratio, pad = ratio_pad
    r = torch.as_tensor(ratio, dtype=torch.float64).flatten().tolist()  # a number, (ry, rx), numpy or tensor
    if len(r) not in (1, 2) or len(pad) != 2:
        raise ValueError(
            f"scale_boxes: ratio_pad must be ((ry, rx), (pad_w, pad_h)) or (r, (pad_w, pad_h)), got {ratio_pad!r}"
        )
    ry, rx = (r[0], r[0]) if len(r) == 1 else (r[0], r[1])
    out = boxes.clone()
    out[..., 0::2] = (out[..., 0::2] - float(pad[0])) / rx
    out[..., 1::2] = (out[..., 1::2] - float(pad[1])) / ry
    return clip_boxes(out, orig_shape)


def non_max_suppression(
    pred: torch.Tensor,
    conf_thres: float = VAL_CONF_THRES,
    iou_thres: float = VAL_IOU_THRES,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = MAX_DET,
    max_nms: int = 30000,
) -> list[torch.Tensor]:
    """Per-image NMS over model outputs.

    Args:
        pred: (B, N, 4 + nc) boxes xywh in pixels, then per-class scores in [0, 1] (the eval-mode output of
            every accelyolo model).
        conf_thres: candidates need a class score above this.
        iou_thres: boxes overlapping a better one of the same class (all classes if `agnostic`) above this
            IoU are dropped.
        classes: keep only these class indices.
        agnostic: suppress across classes.
        multi_label: one candidate per (box, class) above `conf_thres` instead of the best class only.
        max_det: detections kept per image.
        max_nms: candidates (highest scores) that enter NMS, which bounds its time on noisy early models.

    Returns:
        One (n, 6) tensor per image: x1 y1 x2 y2 conf cls.
    """
    if pred.dim() != 3 or pred.shape[-1] < 5:
        raise ValueError(f"non_max_suppression: pred must be (B, N, 4 + nc), got {tuple(pred.shape)}")
    if not (0 <= conf_thres <= 1 and 0 <= iou_thres <= 1):
        raise ValueError(f"non_max_suppression: thresholds must lie in [0, 1], got {conf_thres}, {iou_thres}")
    output = []
    wanted = None if classes is None else torch.as_tensor(list(classes), device=pred.device)
    for x in pred.float():  # (N, 4 + nc)
        boxes, scores = xywh2xyxy(x[:, :4]), x[:, 4:]
        if multi_label:
            i, j = (scores > conf_thres).nonzero(as_tuple=True)
            det = torch.cat((boxes[i], scores[i, j, None], j[:, None].float()), 1)
        else:
            conf, j = scores.max(1, keepdim=True)
            det = torch.cat((boxes, conf, j.float()), 1)[conf.view(-1) > conf_thres]
        if wanted is not None:
            det = det[(det[:, 5:6] == wanted).any(1)]
        if det.shape[0] > max_nms:
            det = det[det[:, 4].topk(max_nms).indices]
        if agnostic:
            keep = torchvision.ops.nms(det[:, :4], det[:, 4], iou_thres)
        else:
            keep = torchvision.ops.batched_nms(det[:, :4], det[:, 4], det[:, 5].long(), iou_thres)
        output.append(det[keep[:max_det]])
    return output
