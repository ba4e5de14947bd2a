"""Losses: the task-aligned assigner on hand-worked cases, target building, edge cases, and training."""

from __future__ import annotations

import math

import pytest
import torch

from accelyolo.families import build_loss, build_model
from accelyolo.losses import AnchorBasedLoss, AnchorFreeLoss, FocalLoss, TaskAlignedAssigner
from accelyolo.losses.anchor_free import pad_targets

pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_batch(b: int = 4, size: int = 64, nc: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey images with two bright rectangles each, drawn in the colour channel of their class."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((b, 3, size, size), 0.5)
    rows = []
    for i in range(b):
        for _ in range(2):
            c = int(torch.randint(nc, (1,), generator=g))
            w, h = (torch.rand(2, generator=g) * 0.3 + 0.2).tolist()
            cx = float(torch.rand(1, generator=g)) * (1 - w) + w / 2
            cy = float(torch.rand(1, generator=g)) * (1 - h) + h / 2
            x1, y1, x2, y2 = (round(v * size) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            images[i, c, y1:y2, x1:x2] = 1.0
            rows.append([i, c, cx, cy, w, h])
    return images, torch.tensor(rows)


# ----------------------------------------------------------------------------------------- assigner


def _grid_points(n: int = 4, stride: float = 8.0) -> torch.Tensor:
    """(n * n, 2) cell centres of an n x n grid, row-major."""
    c = (torch.arange(n, dtype=torch.float32) + 0.5) * stride
    gy, gx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack((gx, gy), -1).view(-1, 2)


def test_assigner_picks_topk_inside_the_box_and_scales_scores():
    points = _grid_points()  # centres 4, 12, 20, 28 on each axis
    gt = torch.tensor([[[0.0, 0.0, 16.0, 16.0]]])  # contains the 4 centres (4|12, 4|12)
    pd_boxes = gt.expand(1, 16, 4).clone()  # every prediction equals the box: IoU 1
    scores = torch.zeros(1, 16, 2)
    inside = [0, 1, 4, 5]
    scores[0, inside, 1] = torch.tensor([0.9, 0.4, 0.1, 0.0])
    scores[0, 15, 1] = 1.0  # outside the box: never a candidate
    out = TaskAlignedAssigner(2, topk=2)(scores, pd_boxes, points, torch.tensor([[[1.0]]]), gt, torch.ones(1, 1, 1))
    assert out.fg_mask[0].nonzero().view(-1).tolist() == [0, 1]
    assert out.labels[0, [0, 1]].tolist() == [1, 1]
    torch.testing.assert_close(out.bboxes[0, 0], gt[0, 0])
    # align = s^0.5 * 1^6; the best anchor gets the best IoU (1), the other its align share
    assert out.scores[0, 0].tolist() == pytest.approx([0.0, 1.0], abs=1e-5)
    assert out.scores[0, 1].tolist() == pytest.approx([0.0, math.sqrt(0.4 / 0.9)], abs=1e-5)
    assert out.scores[0, 2:].abs().sum() == 0


def test_assigner_shared_anchor_goes_to_the_better_overlap_and_padding_is_ignored():
    points = torch.tensor([[10.0, 10.0], [30.0, 30.0]])
    gts = torch.tensor([[[0.0, 0.0, 20.0, 20.0], [5.0, 5.0, 40.0, 40.0], [0.0, 0.0, 50.0, 50.0]]])
    labels = torch.tensor([[[0.0], [1.0], [0.0]]])
    mask = torch.tensor([[[1.0], [1.0], [0.0]]])  # the third box is padding
    pd_boxes = torch.tensor([[[1.0, 1.0, 19.0, 19.0], [6.0, 6.0, 40.0, 40.0]]])  # near box 0, then box 1
    scores = torch.full((1, 2, 2), 0.5)
    out = TaskAlignedAssigner(2, topk=10)(scores, pd_boxes, points, labels, gts, mask)
    # point 0 lies in boxes 0 and 1 and overlaps box 0 best; point 1 lies only in box 1 (box 2 is padding)
    assert out.fg_mask.tolist() == [[True, True]]
    assert out.gt_index.tolist() == [[0, 1]]
    assert out.labels.tolist() == [[0, 1]]


def test_a_box_thinner_than_min_side_gets_the_anchor_points_around_it():
    """A plate 4 px high between two rows of stride-8 centres (y 12 and 20): no centre inside, so nothing
    learns it; grown to 16 px about its centre it takes the 2 x 2 centres around it, and the targets stay
    the real box."""
    points = _grid_points()
    gt = torch.tensor([[[6.0, 14.0, 22.0, 18.0]]])  # x 6-22 holds centres 12, 20; y 14-18 holds none
    pd_boxes = gt.expand(1, 16, 4).clone()
    scores = torch.full((1, 16, 1), 0.5)
    args = (scores, pd_boxes, points, torch.zeros(1, 1, 1), gt, torch.ones(1, 1, 1))
    assert not TaskAlignedAssigner(1, topk=10)(*args).fg_mask.any()
    out = TaskAlignedAssigner(1, topk=10, min_side=16.0)(*args)
    taken = out.fg_mask[0].nonzero().view(-1)
    assert points[taken].tolist() == [[12.0, 12.0], [20.0, 12.0], [12.0, 20.0], [20.0, 20.0]]
    torch.testing.assert_close(out.bboxes[0, taken], gt[0].expand(4, 4))
    # a box already larger than min_side is not changed: the 4 centres inside, as without it
    big = torch.tensor([[[0.0, 0.0, 16.0, 16.0]]])
    big_args = (scores, big.expand(1, 16, 4), points, args[3], big, args[5])
    plain, grown = (TaskAlignedAssigner(1, topk=10, min_side=side)(*big_args) for side in (0.0, 16.0))
    assert plain.fg_mask.tolist() == grown.fg_mask.tolist()
    with pytest.raises(ValueError, match="min_side"):
        TaskAlignedAssigner(1, min_side=-1.0)


def test_assigner_without_ground_truth():
    out = TaskAlignedAssigner(3)(
        torch.rand(2, 5, 3),
        torch.rand(2, 5, 4),
        torch.rand(5, 2),
        torch.zeros(2, 0, 1),
        torch.zeros(2, 0, 4),
        torch.zeros(2, 0, 1),
    )
    assert not out.fg_mask.any() and out.scores.sum() == 0


def test_pad_targets_groups_rows_by_image():
    targets = torch.tensor([[1, 2, 0.5, 0.5, 0.5, 0.5], [0, 1, 0.25, 0.25, 0.5, 0.5], [1, 0, 0.5, 0.5, 1.0, 1.0]])
    gt, mask = pad_targets(targets, 3, torch.tensor([100.0, 100.0, 100.0, 100.0]))
    assert gt.shape == (3, 2, 5) and mask.view(3, 2).tolist() == [[1, 0], [1, 1], [0, 0]]
    assert gt[0, 0].tolist() == [1, 0, 0, 50, 50]
    assert gt[1].tolist() == [[2, 25, 25, 75, 75], [0, 0, 0, 100, 100]]
    with pytest.raises(ValueError, match="image indices"):
        pad_targets(targets, 1, torch.ones(4))


# ------------------------------------------------------------------------------- anchor-based targets


def test_anchor_based_targets_use_anchor_t_and_two_neighbours():
    model = build_model("yolov5t", nc=2)
    loss_fn = build_loss(model, imgsz=64)
    preds = [torch.zeros(1, 3, 64 // s, 64 // s, 7) for s in (8, 16, 32)]
    # a 13 x 26 px box centred at (20, 20) px: at P3 the centre is cell (2.5, 2.5) -> no neighbour within 0.5
    # of its lower edges; move it to (18, 18) px = (2.25, 2.25) cells -> left and upper neighbours join
    target = torch.tensor([[0, 1, 18 / 64, 18 / 64, 13 / 64, 26 / 64]])
    b, a, gj, gi, tbox, tcls, anchors = loss_fn.build_targets(preds, target)[0]
    # P3 anchors (px) 10x13, 16x30, 33x23: ratios to 13x26 are all below 4
    assert sorted(set(a.tolist())) == [0, 1, 2]
    assert len(b) == 3 * 3  # own cell + 2 neighbours, for each anchor
    cells = sorted(set(zip(gi.tolist(), gj.tolist())))
    assert cells == [(1, 2), (2, 1), (2, 2)]
    assert ((tbox[:, :2] > -0.5) & (tbox[:, :2] < 1.5)).all() and (tcls == 1).all()
    # P5 anchors (px) 116x90.. are more than 4x the box: no match at that level
    assert len(loss_fn.build_targets(preds, target)[2][0]) == 0


def test_anchor_based_gains_are_scaled_like_yolov5():
    model = build_model("yolov5t", nc=4)
    loss_fn = build_loss(model, imgsz=320)
    assert isinstance(loss_fn, AnchorBasedLoss) and loss_fn.names == ("box", "obj", "cls")
    assert loss_fn.gains == pytest.approx((0.05, 1.0 * (320 / 640) ** 2, 0.5 * 4 / 80))
    smoothed = build_loss(model, label_smoothing=0.1)
    assert (smoothed.cp, smoothed.cn) == pytest.approx((0.95, 0.05))
    free = build_loss(build_model("yolov8t", nc=4), box=1.0)
    assert isinstance(free, AnchorFreeLoss) and free.gains == (1.0, 0.5, 1.5) and free.names == ("box", "cls", "dfl")


def test_focal_loss_matches_the_formula():
    logits, target = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0])
    p = torch.sigmoid(logits)
    bce = -(target * p.log() + (1 - target) * (1 - p).log())
    p_t = torch.tensor([p[0], 1 - p[1]])
    expected = (bce * torch.tensor([0.25, 0.75]) * (1 - p_t) ** 1.5).mean()
    got = FocalLoss(torch.nn.BCEWithLogitsLoss(), gamma=1.5)(logits, target)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


# ----------------------------------------------------------------------------------- both losses


def _crowded_targets(b: int, per_image: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = b * per_image
    xy, wh = torch.rand(n, 2, generator=g), torch.rand(n, 2, generator=g) * 0.98 + 0.001
    img = torch.arange(b).repeat_interleave(per_image).float()[:, None]
    cls = torch.randint(0, 3, (n, 1), generator=g).float()
    extremes = torch.tensor([[0, 0, 0.5, 0.5, 1.0, 1.0], [0, 1, 0.001, 0.999, 0.002, 0.002]])
    return torch.cat((torch.cat((img, cls, xy, wh), 1), extremes))


@pytest.mark.parametrize("name", ["yolov8t", "yolov5t"])
@pytest.mark.parametrize("case", ["background", "crowded"])
def test_losses_are_finite(name, case):
    torch.manual_seed(0)
    model = build_model(name, nc=3).train()
    loss_fn = build_loss(model, imgsz=64, fl_gamma=1.5 if name == "yolov5t" else 0.0)
    targets = torch.zeros(0, 6) if case == "background" else _crowded_targets(2, 60)
    total, items = loss_fn(model(torch.rand(2, 3, 64, 64)), targets)
    assert total.dim() == 0 and items.shape == (3,) and not items.requires_grad
    assert torch.isfinite(total) and torch.isfinite(items).all()
    assert total.item() == pytest.approx(items.sum().item() * 2, rel=1e-5)  # x batch size
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if case == "background":
        assert items[0] == 0 and items[-1 if name == "yolov8t" else 2] == 0  # no box / no class targets


@pytest.mark.parametrize("name", ["yolov8t", "yolov5t"])
def test_loss_accepts_low_precision_predictions(name):
    model = build_model(name, nc=2).train()
    preds = [p.detach().to(torch.bfloat16) for p in model(torch.rand(1, 3, 64, 64))]
    total, items = build_loss(model, imgsz=64)(preds, torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3]]))
    assert total.dtype == torch.float32 and torch.isfinite(items).all()


def test_loss_rejects_eval_outputs():
    model = build_model("yolov8t", nc=2).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="model.train"):
        build_loss(model)(out, torch.zeros(0, 6))


@pytest.mark.parametrize("name", ["yolov8t", "yolov5t"])
def test_loss_halves_when_fitting_a_small_batch(name):
    torch.manual_seed(0)
    images, targets = synthetic_batch()
    model = build_model(name, nc=2).train()
    loss_fn = build_loss(model, imgsz=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    history = []
    for _ in range(60):
        total, _ = loss_fn(model(images), targets)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert sum(history[-3:]) / 3 < 0.5 * history[0], history[::10]


def test_loss_sees_anchors_replaced_after_building():
    model = build_model("yolov5t", nc=2)
    loss_fn = build_loss(model, imgsz=64)
    preds = [torch.zeros(1, 3, 64 // s, 64 // s, 7) for s in (8, 16, 32)]
    target = torch.tensor([[0, 0, 0.5, 0.5, 0.9, 0.05]])  # 58 x 3 px: too flat for every default anchor
    assert sum(len(t[0]) for t in loss_fn.build_targets(preds, target)) == 0
    with torch.no_grad():
        model.head.anchors[0] = torch.tensor([[50.0, 4.0], [60.0, 3.0], [40.0, 3.0]])
    assert len(loss_fn.build_targets(preds, target)[0][0]) > 0
