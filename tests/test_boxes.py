"""Box conversions, IoU variants, NMS options and letterbox rescaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from accelyolo.core.boxes import (
    bbox_iou,
    box_iou,
    non_max_suppression,
    scale_boxes,
    xywh2xyxy,
    xywhn2xyxy,
    xyxy2xywh,
)


def test_conversions_round_trip():
    xyxy = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 7.0, 9.0]])
    xywh = xyxy2xywh(xyxy)
    assert xywh.tolist() == [[5.0, 10.0, 10.0, 20.0], [6.0, 7.0, 2.0, 4.0]]
    assert torch.equal(xywh2xyxy(xywh), xyxy)


def test_iou_variants_on_hand_worked_boxes():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    b = torch.tensor([1.0, 0.0, 3.0, 2.0])  # half overlap: inter 2, union 6
    assert bbox_iou(a, b).item() == pytest.approx(1 / 3, abs=1e-6)
    assert box_iou(a[None], b[None]).item() == pytest.approx(1 / 3, abs=1e-6)
    # GIoU: enclosing box 3 x 2 = 6 = union, so no penalty
    assert bbox_iou(a, b, kind="giou").item() == pytest.approx(1 / 3, abs=1e-6)
    # DIoU: centre distance 1, enclosing diagonal^2 = 9 + 4
    assert bbox_iou(a, b, kind="diou").item() == pytest.approx(1 / 3 - 1 / 13, abs=1e-6)
    # CIoU equals DIoU for equal aspect ratios, and 1 for identical boxes
    assert bbox_iou(a, b, kind="ciou").item() == pytest.approx(1 / 3 - 1 / 13, abs=1e-6)
    assert bbox_iou(a, a, kind="ciou").item() == pytest.approx(1.0, abs=1e-6)
    c = torch.tensor([1.0, 1.0, 2.0, 2.0])  # xywh: the same box as a
    assert bbox_iou(c, c * torch.tensor([1, 1, 1, 2.0]), xywh=True, kind="ciou").item() < 0.5
    far = torch.tensor([10.0, 10.0, 12.0, 12.0])
    assert bbox_iou(a, far, kind="giou").item() < 0


def test_ciou_aspect_term_and_gradient():
    a = torch.tensor([0.0, 0.0, 4.0, 1.0], requires_grad=True)
    b = torch.tensor([0.0, 0.0, 1.0, 4.0])
    iou = bbox_iou(a, b, kind="ciou")
    diou = bbox_iou(a, b, kind="diou")
    # by hand: overlap 1 x 1, union 4 + 4 - 1; enclosing box 4 x 4 (diagonal^2 32); centres (2, .5), (.5, 2)
    plain = 1 / 7
    expected_diou = plain - (1.5**2 + 1.5**2) / 32
    v = 4 / math.pi**2 * (math.atan(1 / 4) - math.atan(4)) ** 2  # aspect term: w/h is 4 against 1/4
    alpha = v / (v - plain + 1)
    assert bbox_iou(a, b).item() == pytest.approx(plain, abs=1e-6)
    assert diou.item() == pytest.approx(expected_diou, abs=1e-6)
    assert iou.item() == pytest.approx(expected_diou - alpha * v, abs=1e-6)
    iou.backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_conversions_accept_numpy_and_match_torch():
    rng = np.random.default_rng(0)
    rows = rng.uniform(0, 1, (20, 5)).astype(np.float32)  # YOLO rows with an extra column
    for fn in (xywh2xyxy, xyxy2xywh):
        out = fn(rows)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (20, 4)
        np.testing.assert_array_equal(out, fn(torch.from_numpy(rows)).numpy())  # bitwise the same
    px = xywhn2xyxy(np.array([[0.5, 0.25, 0.5, 0.5, 3.0]], np.float32), w=64, h=32)
    assert px.dtype == np.float32 and px.tolist() == [[16.0, 0.0, 48.0, 16.0]]
    assert xywhn2xyxy(torch.tensor([[0.5, 0.25, 0.5, 0.5]]), 64, 32).tolist() == [[16.0, 0.0, 48.0, 16.0]]


def _pred(rows: list[list[float]], nc: int = 2) -> torch.Tensor:
    """(1, N, 4 + nc) predictions from rows [cx, cy, w, h, score_0, ..., score_nc-1]."""
    return torch.tensor([rows], dtype=torch.float32).view(1, -1, 4 + nc)


def test_nms_thresholds_classes_and_max_det():
    pred = _pred(
        [
            [10, 10, 10, 10, 0.9, 0.0],
            [11, 10, 10, 10, 0.8, 0.0],  # overlaps the first, same class -> suppressed
            [11, 10, 10, 10, 0.0, 0.7],  # overlaps the first, other class -> kept unless agnostic
            [50, 50, 10, 10, 0.0, 0.6],
            [80, 80, 10, 10, 0.0005, 0.0],  # below conf
        ]
    )
    (det,) = non_max_suppression(pred, conf_thres=0.001, iou_thres=0.5)
    assert det.shape == (3, 6)
    assert det[:, 4].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert det[0, :4].tolist() == [5, 5, 15, 15] and det[:, 5].tolist() == [0, 1, 1]
    (agn,) = non_max_suppression(pred, iou_thres=0.5, agnostic=True)
    assert agn[:, 4].tolist() == pytest.approx([0.9, 0.6])
    (only1,) = non_max_suppression(pred, iou_thres=0.5, classes=[1])
    assert only1[:, 5].tolist() == [1, 1]
    (top1,) = non_max_suppression(pred, iou_thres=0.5, max_det=1)
    assert len(top1) == 1 and top1[0, 4].item() == pytest.approx(0.9)


def test_nms_multi_label_and_empty():
    pred = _pred([[20, 20, 8, 8, 0.6, 0.5], [60, 60, 8, 8, 0.01, 0.0]])
    (single,) = non_max_suppression(pred, conf_thres=0.1)
    assert single[:, 5].tolist() == [0]
    (multi,) = non_max_suppression(pred, conf_thres=0.1, multi_label=True)
    assert sorted(multi[:, 5].tolist()) == [0, 1]
    out = non_max_suppression(torch.zeros(2, 5, 6), conf_thres=0.1)
    assert [o.shape for o in out] == [(0, 6), (0, 6)]
    with pytest.raises(ValueError, match=r"\(B, N, 4 \+ nc\)"):
        non_max_suppression(torch.zeros(5, 6))


def test_scale_boxes_undoes_letterbox():
    # original 100 x 200 (h, w) resized by 0.32 to 32 x 64, padded 16 px top and bottom to 64 x 64
    boxes = torch.tensor([[0.0, 16.0, 64.0, 48.0], [32.0, 24.0, 48.0, 40.0], [-5.0, 0.0, 70.0, 64.0]])
    out = scale_boxes(boxes, ratio_pad=((0.32, 0.32), (0, 16)), orig_shape=(100, 200))
    torch.testing.assert_close(out[0], torch.tensor([0.0, 0.0, 200.0, 100.0]))
    torch.testing.assert_close(out[1], torch.tensor([100.0, 25.0, 150.0, 75.0]))
    torch.testing.assert_close(out[2], torch.tensor([0.0, 0.0, 200.0, 100.0]))  # clipped
    assert boxes[2, 0].item() == -5.0  # input untouched


def test_scale_boxes_accepts_a_single_ratio():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    out = scale_boxes(boxes, ratio_pad=(0.5, (10, 20)), orig_shape=(200, 200))
    assert out.tolist() == [[0.0, 0.0, 40.0, 40.0]]
    with pytest.raises(ValueError, match="ratio_pad must be"):
        scale_boxes(boxes, ratio_pad=((1, 2, 3), (0, 0)), orig_shape=(10, 10))
