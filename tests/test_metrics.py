"""Unit tests of accelyolo.evaluation.metrics on hand-computed cases."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from accelyolo.evaluation.metrics import (
    DetectionEvaluator,
    DetectionResult,
    coco_json_records,
    confusion_matrix,
    fitness,
)

A = [10.0, 10.0, 50.0, 50.0]
B = [60.0, 60.0, 100.0, 90.0]


def det(box, score, cls):
    return [*box, score, cls]


def test_perfect_predictions_score_one() -> None:
    ev = DetectionEvaluator(nc=2, names=["a", "b"])
    ev.add("1", np.array([det(A, 0.9, 0), det(B, 0.8, 1)]), np.array([A, B]), np.array([0, 1]))
    ev.add("2", np.array([det(B, 0.7, 1)]), np.array([B]), np.array([1]))
    res = ev.compute()
    assert isinstance(res, DetectionResult)
    assert res.map == pytest.approx(1.0) and res.map50 == pytest.approx(1.0)
    assert res.mp == pytest.approx(1.0) and res.mr == pytest.approx(1.0)
    assert res.fitness == pytest.approx(1.0)
    assert res.classes.tolist() == [0, 1]
    assert res.n_instances.tolist() == [1, 2] and res.n_images.tolist() == [1, 2]
    assert res.seen == 2
    assert set(res.as_dict()) == {"precision", "recall", "mAP50", "mAP50-95", "fitness", "max_score"}


def test_hand_computed_ap_with_interpolation() -> None:
    """TP, FP, TP by score over 2 gts: recall .5 at precision 1, recall 1 at precision 2/3."""
    ev = DetectionEvaluator(nc=1)
    far = [200.0, 200.0, 240.0, 240.0]
    preds = np.array([det(A, 0.9, 0), det(far, 0.8, 0), det(B, 0.7, 0)])
    ev.add("img", preds, np.array([A, B]), np.array([0]).repeat(2))
    res = ev.compute()
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert res.map50 == pytest.approx(expected, abs=1e-12)
    assert res.map == pytest.approx(expected, abs=1e-12)  # exact boxes: same at every IoU


def test_greedy_matching_by_score_not_optimal_assignment() -> None:
    """The best-scored detection takes its best gt even when another assignment would match both."""
    ev = DetectionEvaluator(nc=1)
    gt = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]])
    d1 = det([4.0, 0.0, 14.0, 10.0], 0.9, 0)  # IoU .82 with gt1 (taken), .67 with gt0
    d2 = det([0.0, 0.0, 8.0, 10.0], 0.8, 0)  # IoU .8 with gt0, .25 with gt1
    ev.add("x", np.array([d1, d2]), gt, np.zeros(2))
    res = ev.compute()
    assert res.ap_per_iou[0, 0] == pytest.approx(1.0)  # IoU .5: d1->gt1, d2->gt0
    # at IoU .70, d1 only reaches gt1 (.82); d2 (.8) still takes gt0
    assert res.ap_per_iou[0, 4] == pytest.approx(1.0)

    ev = DetectionEvaluator(nc=1)
    d1 = det([2.0, 0.0, 12.0, 10.0], 0.9, 0)  # IoU .67 gt0, .54 gt1 -> takes gt0
    d2 = det([0.0, 0.0, 9.0, 10.0], 0.8, 0)  # IoU .9 gt0 (taken), .33 gt1 -> unmatched
    ev.add("x", np.array([d1, d2]), gt, np.zeros(2))
    res = ev.compute()
    assert res.map50 == pytest.approx(51 / 101)  # recall stops at .5


def test_classes_without_gt_are_excluded_and_missed_classes_count_zero() -> None:
    ev = DetectionEvaluator(nc=3)
    # class 0 perfect, class 1 has gt but no detection, class 2 has only a false positive
    ev.add("i", np.array([det(A, 0.9, 0), det(B, 0.9, 2)]), np.array([A, B]), np.array([0, 1]))
    res = ev.compute()
    assert res.classes.tolist() == [0, 1]
    assert res.ap.tolist() == pytest.approx([1.0, 0.0])
    assert res.map == pytest.approx(0.5)


def test_max_dets_per_image_and_class() -> None:
    gt = np.array([A])
    fps = [det([200.0 + i, 200.0, 240.0 + i, 240.0], 0.9, 0) for i in range(99)]
    ev = DetectionEvaluator(nc=1)
    ev.add("i", np.array([*fps, det(A, 0.1, 0)]), gt, np.zeros(1))
    assert ev.compute().map50 == pytest.approx(0.01)  # the TP is the 100th: precision .01
    ev = DetectionEvaluator(nc=1)
    ev.add("i", np.array([*fps, det(A, 0.1, 0), det(A, 0.05, 0)]), gt, np.zeros(1))
    assert ev.compute().map50 == pytest.approx(0.01)  # a 101st detection (lower score) is cut
    ev = DetectionEvaluator(nc=1)
    ev.add("i", np.array([*fps, fps[0], det(A, 0.1, 0)]), gt, np.zeros(1))
    assert ev.compute().map50 == pytest.approx(0.0)  # the TP is the 101st: dropped


def test_add_order_and_ranks_merge_give_the_same_result() -> None:
    rng = np.random.default_rng(0)
    items = []
    for i in range(30):
        m = int(rng.integers(0, 5))
        xy = rng.uniform(0, 80, (m, 2))
        gt = np.c_[xy, xy + rng.uniform(5, 30, (m, 2))]
        cls = rng.integers(0, 3, m)
        preds = np.c_[gt + rng.normal(0, 2, gt.shape), rng.choice([0.3, 0.6], m), cls]
        items.append((f"{i}.jpg", preds, gt, cls))
    one = DetectionEvaluator(nc=3)
    for item in items:
        one.add(*item)
    rank0, rank1 = DetectionEvaluator(nc=3), DetectionEvaluator(nc=3)
    for item in items[::2] + items[:3]:  # padding duplicates, as DDP even batching makes
        rank0.add(*item)
    for item in items[1::2][::-1]:
        rank1.add(*item)
    records = copy.deepcopy(rank0.records()) + copy.deepcopy(rank1.records())
    for rec in records:
        assert isinstance(rec["image_id"], str)
        assert all(isinstance(rec[k], np.ndarray) for k in ("preds", "gt_boxes", "gt_classes"))
    merged = DetectionEvaluator(nc=3)
    merged.extend(records)
    merged.extend(rank1.records())  # again: all duplicates, dropped
    assert len(merged) == len(one) == 30
    a, b = one.compute(), merged.compute()
    assert a.as_dict() == b.as_dict()
    np.testing.assert_array_equal(a.confusion, b.confusion)


def test_tensor_inputs_half_precision_and_empty_images() -> None:
    ev = DetectionEvaluator(nc=2)
    preds = torch.tensor([det(A, 0.9, 0)], dtype=torch.float16)
    ev.add("t", preds, torch.tensor([A]), torch.tensor([0]))
    ev.add("empty-preds", torch.zeros((0, 6)), torch.tensor([B]), torch.tensor([1]))
    ev.add("no-labels", np.array([det(B, 0.5, 1)]), np.zeros((0, 4)), np.zeros(0))
    res = ev.compute()
    assert res.ap.tolist() == pytest.approx([1.0, 0.0])
    assert res.n_instances.tolist() == [1, 1]


def test_no_images_or_no_ground_truth_gives_zeros() -> None:
    res = DetectionEvaluator(nc=2).compute()
    assert res.as_dict() == {
        "precision": 0.0,
        "recall": 0.0,
        "mAP50": 0.0,
        "mAP50-95": 0.0,
        "fitness": 0.0,
        "max_score": 0.0,
    }
    ev = DetectionEvaluator(nc=2)
    ev.add("fp-only", np.array([det(A, 0.9, 0)]), np.zeros((0, 4)), np.zeros(0))
    res = ev.compute()
    assert res.classes.size == 0 and res.map == 0.0
    assert res.confusion[0, 2] == 1  # a false positive against background


def test_max_score_is_the_highest_score_over_every_image_and_class() -> None:
    """The trainer's degenerate-model check reads it: every detection counts, matched or not, on images with or
    without ground truth, beyond the 100 per image and class that AP keeps."""
    ev = DetectionEvaluator(nc=2)
    ev.add("1", np.array([det(A, 0.004, 0), det(B, 0.012, 1)]), np.array([A]), np.array([0]))
    ev.add("2", np.array([det(B, 0.0123, 1)]), np.zeros((0, 4)), np.zeros(0))  # a false positive, no labels
    ev.add("3", np.zeros((0, 6)), np.array([B]), np.array([1]))
    res = ev.compute()
    assert res.max_score == pytest.approx(0.0123) and res.as_dict()["max_score"] == res.max_score
    empty = DetectionEvaluator(nc=1)
    empty.add("1", np.zeros((0, 6)), np.array([A]), np.array([0]))
    assert empty.compute().max_score == 0.0


def test_precision_recall_at_best_f1() -> None:
    """Two gts: a TP at .9, a FP at .6, a TP at .3; best F1 keeps all three (P 2/3, R 1)."""
    ev = DetectionEvaluator(nc=1)
    far = [200.0, 200.0, 240.0, 240.0]
    ev.add("i", np.array([det(A, 0.9, 0), det(far, 0.6, 0), det(B, 0.3, 0)]), np.array([A, B]), [0, 0])
    res = ev.compute()
    assert res.mp == pytest.approx(2 / 3, abs=1e-9)
    assert res.mr == pytest.approx(1.0)
    assert res.best_conf <= 0.3
    assert res.p_curve.shape == res.r_curve.shape == res.f1_curve.shape == (1, res.conf_grid.size)
    assert res.pr_precision.shape == (1, res.pr_recall.size)


def test_confusion_matrix_counts() -> None:
    nc = 3
    gt_boxes = np.array([A, B, [0.0, 60.0, 30.0, 90.0]])
    gt_cls = np.array([0, 1, 2])
    dets = np.array(
        [
            det(A, 0.9, 0),  # correct
            det(B, 0.6, 2),  # matches B (class 1) as class 2: IoU 1
            det([61.0, 61.0, 100.0, 90.0], 0.7, 1),  # lower IoU with B, higher conf: background FP
            det([0.0, 60.0, 30.0, 90.0], 0.2, 2),  # below conf 0.25: ignored, gt 2 missed
            det([300.0, 300.0, 330.0, 330.0], 0.5, 1),  # nothing there
        ]
    )
    m = confusion_matrix(dets, np.zeros(5, int), gt_boxes, gt_cls, np.zeros(3, int), nc)
    expected = np.zeros((4, 4), int)
    expected[0, 0] = 1
    expected[2, 1] = 1
    expected[3, 2] = 1  # missed gt of class 2
    expected[1, 3] = 2  # two class-1 detections on background
    np.testing.assert_array_equal(m, expected)


def test_bad_inputs_name_the_image_and_the_expected_form() -> None:
    ev = DetectionEvaluator(nc=2)
    with pytest.raises(ValueError, match=r"img7.*\(n, 6\)"):
        ev.add("img7", np.zeros((3, 5)), np.zeros((0, 4)), np.zeros(0))
    with pytest.raises(ValueError, match=r"img8.*\[0, 2\)"):
        ev.add("img8", np.array([det(A, 0.5, 2)]), np.zeros((0, 4)), np.zeros(0))
    with pytest.raises(ValueError, match=r"img9.*gt_boxes"):
        ev.add("img9", np.zeros((0, 6)), np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        ev.add("nan", np.array([det(A, float("nan"), 0)]), np.zeros((0, 4)), np.zeros(0))
    with pytest.raises(ValueError, match="names"):
        DetectionEvaluator(nc=2, names=["a"])


def test_fitness_weights() -> None:
    row = {"precision": 0.9, "recall": 0.8, "mAP50": 0.5, "mAP50-95": 0.3}
    assert fitness(row) == pytest.approx(0.1 * 0.5 + 0.9 * 0.3)
    with pytest.raises(KeyError, match="mAP50-95"):
        fitness({"mAP50": 0.5})


def test_coco_json_records() -> None:
    dets = np.array([[10.12345, 20.0, 30.5, 60.25, 0.123456789, 3.0]], dtype=np.float32)
    (rec,) = coco_json_records("/data/images/000000000139.jpg", dets)
    x1, x2 = float(np.float32(10.12345)), float(np.float32(30.5))
    assert rec == {  # unrounded: the float32 values, and w, h as exact differences (x + w == x2)
        "image_id": 139,
        "category_id": 3,
        "bbox": [x1, 20.0, x2 - x1, 40.25],
        "score": float(np.float32(0.123456789)),
    }
    assert rec["bbox"][0] + rec["bbox"][2] == x2
    assert isinstance(rec["category_id"], int)
    (rec,) = coco_json_records("pics/cat_01.png", torch.tensor(dets))
    assert rec["image_id"] == "cat_01"
    assert coco_json_records("1.jpg", np.zeros((0, 6))) == []


class _FixedOutput(torch.nn.Module):
    """A 'model' whose eval output is one box (centre 32, 32, size 20 px) unsure between two classes."""

    def forward(self, images):
        box = torch.tensor([32.0, 32.0, 20.0, 20.0, 0.6, 0.4])
        return box.expand(images.shape[0], 1, 6).clone()  # (B, N=1, 4 + nc=2)


def test_evaluation_keeps_every_class_of_a_box_above_the_floor():
    """The box's best class is 0 (0.6) but the truth is class 1 (0.4): evaluation counts the class-1 candidate
    (multi-label, as YOLOv5's val.py), so mAP50 is 1; keeping only the best class would give 0."""
    import contextlib
    import types

    from accelyolo.evaluation.evaluators import MULTI_LABEL, evaluate

    accelerator = types.SimpleNamespace(
        device=torch.device("cpu"), num_processes=1, is_main_process=True, autocast=contextlib.nullcontext
    )
    batch = {
        "images": torch.zeros(1, 3, 64, 64, dtype=torch.uint8),
        "targets": torch.tensor([[0.0, 1.0, 0.5, 0.5, 20 / 64, 20 / 64]]),  # img, cls, cx, cy, w, h (normalized)
        "paths": ["a.jpg"],
        "orig_shapes": [(64, 64)],
        "ratio_pads": [((1.0, 1.0), (0.0, 0.0))],
    }
    names = ["zero", "one"]
    assert MULTI_LABEL
    result = evaluate(_FixedOutput(), [batch], accelerator, nc=2, names=names)
    assert result.map50 == pytest.approx(1.0)
    single = evaluate(_FixedOutput(), [batch], accelerator, nc=2, names=names, multi_label=False)
    assert single.map50 == pytest.approx(0.0)
