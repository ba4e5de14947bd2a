"""Crowd regions (COCO `iscrowd: 1`) in accelyolo.evaluation.metrics, against pycocotools' COCOeval."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from accelyolo.evaluation.metrics import DetectionEvaluator

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def random_scene(seed: int, n_images: int = 12, nc: int = 3):
    """Images with regular boxes, crowd regions that cover some of them, and detections near both."""
    rng = np.random.default_rng(seed)
    scenes = []
    for image_id in range(1, n_images + 1):
        m, k = int(rng.integers(0, 5)), int(rng.integers(0, 3))
        xy = rng.uniform(0, 300, (m + k, 2))
        wh = rng.uniform(8, 120, (m + k, 2))
        boxes = np.c_[xy, xy + wh]
        classes = rng.integers(0, nc, m + k)
        crowd = np.zeros(m + k, bool)
        crowd[m:] = True
        preds = []
        for box, cls in zip(boxes, classes, strict=True):
            for _ in range(int(rng.integers(1, 4))):  # a few detections per object, some inside crowds
                jitter = rng.normal(0, 0.15, 4) * np.r_[box[2:] - box[:2], box[2:] - box[:2]]
                if rng.random() < 0.5:  # a small box well inside the region
                    c = box[:2] + (box[2:] - box[:2]) * rng.uniform(0.2, 0.6, 2)
                    preds.append([*c, *(c + (box[2:] - box[:2]) * 0.3), rng.uniform(0.01, 1), cls])
                else:
                    preds.append([*(box + jitter), rng.uniform(0.01, 1), cls])
        preds += [[*p, *(p + 30), rng.uniform(0.01, 1), rng.integers(0, nc)] for p in rng.uniform(0, 300, (2, 2))]
        preds = np.array(preds, dtype=np.float64).reshape(-1, 6)
        preds[:, 2:4] = np.maximum(preds[:, 2:4], preds[:, :2] + 1)
        scenes.append((image_id, boxes.astype(np.float32), classes, crowd, preds.astype(np.float32)))
    return scenes


def cocoeval(scenes, nc: int) -> tuple[float, float]:
    gt = {"images": [], "annotations": [], "categories": [{"id": c} for c in range(nc)]}
    dt = []
    for image_id, boxes, classes, crowd, preds in scenes:
        gt["images"].append({"id": image_id})
        for box, cls, is_crowd in zip(boxes.astype(np.float64), classes, crowd, strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            gt["annotations"].append(
                {"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": int(cls),
                 "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": int(is_crowd)}
            )  # fmt: skip
        for x1, y1, x2, y2, score, cls in preds.astype(np.float64):
            dt.append(
                {"image_id": image_id, "category_id": int(cls), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dt), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


@pytest.mark.parametrize("seed", range(6))
def test_crowd_regions_are_scored_as_cocoeval_does(seed):
    nc = 3
    scenes = random_scene(seed, nc=nc)
    coco_map, coco_map50 = cocoeval(scenes, nc)
    ev = DetectionEvaluator(nc)
    for image_id, boxes, classes, crowd, preds in scenes:
        ev.add(f"{image_id}.jpg", preds, boxes[~crowd], classes[~crowd], boxes[crowd], classes[crowd])
    res = ev.compute()
    assert res.map50 == pytest.approx(coco_map50, abs=1e-4)
    assert res.map == pytest.approx(coco_map, abs=1e-4)


def test_without_the_crowd_rule_the_scores_differ():
    """The scenes do exercise the rule: dropping the crowd regions changes the score."""
    scenes = random_scene(0)
    coco_map, _ = cocoeval(scenes, 3)
    ev = DetectionEvaluator(3)
    for image_id, boxes, classes, crowd, preds in scenes:
        ev.add(f"{image_id}.jpg", preds, boxes[~crowd], classes[~crowd])
    assert abs(ev.compute().map - coco_map) > 1e-3
