"""Autoanchor: BPR of labels against the anchors, refit when it is low, deterministic, stored in the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from accelyolo.families import COCO_ANCHORS, build_model
from accelyolo.models.autoanchor import anchor_metrics, check_anchors, kmean_anchors


def _labels(n_images: int, w_range: tuple[float, float], h_range: tuple[float, float], seed: int = 1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_images):
        n = 4
        w, h = rng.uniform(*w_range, n), rng.uniform(*h_range, n)
        out.append(np.c_[rng.integers(0, 2, n), np.full(n, 0.5), np.full(n, 0.5), w, h])
    out.append(np.zeros((0, 5)))  # a background image
    return out


def test_anchor_metrics_by_hand():
    anchors = np.array([[10.0, 10.0]])
    wh = np.array([[10.0, 10.0], [40.0, 10.0], [41.0, 10.0]])  # ratios 1, 1/4 (not > 1/4), 1/4.1
    bpr, aat = anchor_metrics(anchors, wh, thr=4.0)
    assert bpr == pytest.approx(1 / 3) and aat == pytest.approx(1 / 3)


def test_well_fitting_labels_keep_the_anchors():
    labels = _labels(40, (0.05, 0.3), (0.05, 0.3))  # 32-190 px at 640: COCO-like
    model = build_model("yolov5t", nc=2)
    lines = []
    report = check_anchors(model, labels, None, 640, print_fn=lines.append)
    assert report["replaced"] is False and report["bpr_before"] >= 0.98
    assert report["bpr_after"] == report["bpr_before"]
    assert torch.equal(model.head.anchors, torch.tensor(COCO_ANCHORS, dtype=torch.float32))
    assert lines and "best possible recall" in lines[0]


def test_flat_boxes_get_new_anchors_stored_in_the_state_dict():
    labels = _labels(40, (0.6, 0.9), (0.01, 0.03))  # very flat boxes that no default anchor matches
    shapes = np.tile(np.array([[480, 640]]), (len(labels), 1))  # (h, w) after letterbox-resize
    model = build_model("yolov5t", nc=2)
    lines = []
    report = check_anchors(model, labels, shapes, 640, seed=0, print_fn=lines.append, gen=300)
    assert report["replaced"] is True
    assert report["bpr_before"] < 0.5 and report["bpr_after"] > 0.98
    anchors = model.state_dict()["head.anchors"]
    assert anchors.shape == (3, 3, 2) and not torch.equal(anchors, torch.tensor(COCO_ANCHORS, dtype=torch.float32))
    areas = anchors.view(-1, 2).prod(1)
    assert (areas[1:] >= areas[:-1]).all()  # smallest anchors on the finest level
    assert (anchors[..., 0] > anchors[..., 1]).all()  # they follow the flat shape
    assert any("new anchors" in line for line in lines)
    again = build_model("yolov5t", nc=2)
    assert check_anchors(again, labels, shapes, 640, seed=0, gen=300) == report  # deterministic
    assert torch.equal(again.head.anchors, model.head.anchors)


def test_kmean_anchors_fits_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[10, 20], [50, 50], [200, 100]], dtype=float)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (50, 2)) for c in centres])
    k = kmean_anchors(wh, 3, gen=50, seed=0)
    assert k.shape == (3, 2)
    np.testing.assert_allclose(k, centres, rtol=0.15)
    with pytest.raises(ValueError, match="2 px"):
        kmean_anchors(np.full((4, 2), 1.0), 3)


def test_check_anchors_needs_an_anchor_based_model_and_matching_shapes():
    with pytest.raises(ValueError, match="anchor-based"):
        check_anchors(build_model("yolov8t", nc=2), [np.zeros((0, 5))], None, 64)
    with pytest.raises(ValueError, match=r"shapes must be \(N, 2\)"):
        check_anchors(build_model("yolov5t", nc=2), [np.zeros((0, 5))], np.zeros((3, 2)), 64)


def test_boxes_all_under_2_px_keep_the_anchors():
    """Labels no k-means can fit (every box under 2 px at the training size) keep the anchors, said once,
    instead of failing the run inside kmean_anchors."""
    labels = _labels(10, (0.001, 0.002), (0.001, 0.002))  # under 1.3 px at 640
    model = build_model("yolov5t", nc=2)
    lines = []
    report = check_anchors(model, labels, None, 640, print_fn=lines.append)
    assert report["replaced"] is False and report["bpr_before"] < 0.98
    assert torch.equal(model.head.anchors, torch.tensor(COCO_ANCHORS, dtype=torch.float32))
    assert "no label box is 2 px or larger" in lines[-1]
