"""Time accelyolo's DetectionEvaluator against pycocotools' COCOeval on the same detections.

Synthetic COCO-like data: 80 classes, about 7 gt boxes per image, 100 detections per image
(jittered copies of the gts plus random false positives, random scores).

    python -m benchmarks.evaluator              # 5,000 images (takes a few minutes)
    python -m benchmarks.evaluator --images 500 # quick run (from the repository root)

The last line is `time_ratio=<ours/pycocotools>`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np

from accelyolo.evaluation.metrics import DetectionEvaluator


def make_data(n_images: int, seed: int) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: id, gt xyxy (m, 4), gt classes (m,), detections (100, 6) xyxy conf cls."""
    rng = np.random.default_rng(seed)
    out = []
    for image_id in range(1, n_images + 1):
        m = int(rng.poisson(7))
        xy = rng.uniform(0, 560, (m, 2))
        wh = rng.uniform(8, 200, (m, 2))
        boxes = np.c_[xy, xy + wh]
        classes = rng.integers(0, 80, m)
        n_tp = min(m, 100)
        jitter = rng.normal(0, 0.1, (n_tp, 4)) * np.c_[wh[:n_tp], wh[:n_tp]]
        tp = np.c_[boxes[:n_tp] + jitter, rng.uniform(0, 1, n_tp), classes[:n_tp]]
        n_fp = 100 - n_tp
        fxy = rng.uniform(0, 560, (n_fp, 2))
        fwh = rng.uniform(8, 200, (n_fp, 2))
        fp = np.c_[fxy, fxy + fwh, rng.uniform(0, 1, n_fp), rng.integers(0, 80, n_fp)]
        preds = np.concatenate([tp, fp]).astype(np.float32)
        out.append((image_id, boxes.astype(np.float32), classes, preds))
    return out


def run_ours(data) -> tuple[float, float, float]:
    start = time.perf_counter()
    ev = DetectionEvaluator(nc=80)
    for image_id, boxes, classes, preds in data:
        ev.add(f"{image_id:012d}.jpg", preds, boxes, classes)
    res = ev.compute()
    return time.perf_counter() - start, res.map, res.map50


def run_coco(data) -> tuple[float, float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": [], "annotations": [], "categories": [{"id": c} for c in range(80)]}
    dt = []
    for image_id, boxes, classes, preds in data:
        gt["images"].append({"id": image_id})
        for (x1, y1, x2, y2), c in zip(boxes.astype(np.float64), classes, strict=True):
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": int(c),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        for x1, y1, x2, y2, s, c in preds.astype(np.float64):
            dt.append({"image_id": image_id, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    # time only what COCOeval does with prepared inputs (index building, evaluate, accumulate)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dt)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - start, float(ev.stats[0]), float(ev.stats[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="number of synthetic images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = make_data(args.images, args.seed)
    n_det = sum(len(d[3]) for d in data)
    n_gt = sum(len(d[1]) for d in data)
    print(f"images={args.images} detections={n_det} gt={n_gt}")
    t_ours, map_ours, map50_ours = run_ours(data)
    print(f"ours:        {t_ours:8.2f} s  mAP50-95={map_ours:.6f}  mAP50={map50_ours:.6f}")
    t_coco, map_coco, map50_coco = run_coco(data)
    print(f"pycocotools: {t_coco:8.2f} s  mAP50-95={map_coco:.6f}  mAP50={map50_coco:.6f}")
    print(f"abs diff:    mAP50-95={abs(map_ours - map_coco):.2e}  mAP50={abs(map50_ours - map50_coco):.2e}")
    print(f"time_ratio={t_ours / t_coco:.4f}")


if __name__ == "__main__":
    main()
