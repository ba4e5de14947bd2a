"""Agreement of accelyolo.evaluation.metrics with pycocotools' COCOeval on the same detections."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelyolo.evaluation.metrics import DetectionEvaluator, coco_json_records, write_coco_results

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

COCO128 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco128"
TOL = 1e-4

Image = tuple[int, np.ndarray, np.ndarray, np.ndarray]  # id, gt xyxy (m,4), gt cls (m,), preds (n,6)


def coco_ground_truth(images: list[Image], nc: int) -> dict:
    """COCO's ground-truth dataset of `images`, boxes as the float32 values our evaluator stores."""
    gt = {"images": [], "annotations": [], "categories": [{"id": c} for c in range(nc)]}
    for image_id, boxes, classes, _ in images:
        gt["images"].append({"id": image_id})
        for box, cls in zip(boxes.astype(np.float32).astype(np.float64), classes, strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": int(cls),
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    return gt


def cocoeval_maps(gt: dict, results: list[dict] | str) -> tuple[float, float]:
    """mAP50-95 and mAP50 from COCOeval; `results` is a list of detections or a results file's path."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes refuses an empty list; an empty result set is what COCOeval should see
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def coco_maps(images: list[Image], nc: int) -> tuple[float, float]:
    """mAP50-95 and mAP50 from COCOeval, fed the same floats our evaluator stores (float32)."""
    dt = []
    for image_id, _, _, preds in images:
        for row in preds.astype(np.float32).astype(np.float64):
            x1, y1, x2, y2, score, cls = row
            dt.append(
                {
                    "image_id": image_id,
                    "category_id": int(cls),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    return cocoeval_maps(coco_ground_truth(images, nc), dt)


def ours(images: list[Image], nc: int, shuffle_seed: int | None = None):
    ev = DetectionEvaluator(nc)
    order = list(range(len(images)))
    if shuffle_seed is not None:  # add order must not matter
        np.random.default_rng(shuffle_seed).shuffle(order)
    for i in order:
        image_id, boxes, classes, preds = images[i]
        ev.add(f"images/{image_id:012d}.jpg", preds, boxes, classes)
    return ev.compute()


def assert_agree(images: list[Image], nc: int) -> None:
    """Same mAP50 and mAP50-95 as COCOeval, for every case: images without ground truth included.

    COCOeval reports -1 (undefined) when no class has ground truth at all; ours then reports no
    class and 0.0, the value results.csv and early stopping need.
    """
    coco_map, coco_map50 = coco_maps(images, nc)
    res = ours(images, nc, shuffle_seed=0)
    if coco_map == -1:
        assert not any(len(boxes) for _, boxes, _, _ in images)
        assert res.classes.size == 0 and res.map == 0.0 and res.map50 == 0.0
        return
    assert res.classes.tolist() == sorted({int(c) for _, _, classes, _ in images for c in classes})
    assert res.map50 == pytest.approx(coco_map50, abs=TOL)
    assert res.map == pytest.approx(coco_map, abs=TOL)


def load_coco128_val() -> list[tuple[int, np.ndarray, np.ndarray]]:
    """coco128 val labels as (image id, xyxy pixels, classes), sizes read with Pillow."""
    from PIL import Image as PILImage

    image_dir, label_dir = COCO128 / "images" / "val", COCO128 / "labels" / "val"
    if not image_dir.is_dir() or not label_dir.is_dir():
        pytest.skip(f"coco128 val split not found under {COCO128}")
    out = []
    for path in sorted(image_dir.glob("*.jpg")):
        with PILImage.open(path) as im:
            w, h = im.size
        label = label_dir / f"{path.stem}.txt"
        rows = np.loadtxt(label, ndmin=2) if label.is_file() else np.zeros((0, 5))
        rows = rows.reshape(-1, 5)
        xc, yc, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([xc - bw / 2, yc - bh / 2, xc + bw / 2, yc + bh / 2], axis=1)
        out.append((int(path.stem), boxes, rows[:, 0].astype(np.int64)))
    return out


def make_preds(labels, kind: str, seed: int = 0) -> list[Image]:
    """Prediction sets derived from the labels: perfect, jittered, false positives, ..."""
    rng = np.random.default_rng(seed)
    images = []
    for image_id, boxes, classes in labels:
        m = len(boxes)
        scores = rng.uniform(0.05, 1.0, m)
        pred_boxes, pred_cls = boxes.copy(), classes.copy()
        if kind in ("jitter", "false_pos", "missing", "ties"):
            wh = np.maximum(boxes[:, 2:] - boxes[:, :2], 1.0)
            pred_boxes = boxes + rng.normal(0, 0.08, (m, 4)) * np.c_[wh, wh]
        if kind == "ties":
            scores = rng.choice([0.3, 0.6, 0.9], m)
        preds = np.c_[pred_boxes, scores, pred_cls]
        if kind == "missing":  # a few classes never predicted
            preds = preds[~np.isin(pred_cls, [0, 2, 56])]
        if kind in ("false_pos", "ties"):
            n_fp = rng.integers(0, 12)
            xy = rng.uniform(0, 500, (n_fp, 2))
            wh = rng.uniform(10, 200, (n_fp, 2))
            fp_scores = rng.choice([0.3, 0.6], n_fp) if kind == "ties" else rng.uniform(0, 1, n_fp)
            fp = np.c_[xy, xy + wh, fp_scores, rng.integers(0, 80, n_fp)]
            # duplicates of real boxes (lower IoU-ordered competition for the same gt)
            dup = preds[rng.random(len(preds)) < 0.3].copy()
            dup[:, :4] += rng.normal(0, 3, dup[:, :4].shape)
            preds = np.concatenate([preds, fp, dup])
        images.append((image_id, boxes, classes, preds))
    return images


@pytest.mark.parametrize("kind", ["perfect", "jitter", "false_pos", "missing", "ties"])
def test_coco128_agrees_with_cocoeval(kind: str) -> None:
    labels = load_coco128_val()
    images = make_preds(labels, kind, seed=1)
    assert_agree(images, nc=80)
    if kind == "perfect":
        res = ours(images, 80)
        assert res.map == pytest.approx(1.0) and res.map50 == pytest.approx(1.0)


def test_coco128_more_than_max_dets_per_image_and_class() -> None:
    """Over 100 detections of one class in one image: the truncation keeps the top 100."""
    labels = load_coco128_val()[:8]
    rng = np.random.default_rng(3)
    images = []
    for image_id, boxes, classes in labels:
        extra = np.repeat(np.c_[boxes, np.zeros(len(boxes)), classes], 130 // max(len(boxes), 1) + 1, 0)
        extra[:, :4] += rng.normal(0, 6, extra[:, :4].shape)
        extra[:, 4] = rng.uniform(0, 1, len(extra))
        extra[:, 5] = classes[0] if len(classes) else 0
        images.append((image_id, boxes, classes, extra))
    assert_agree(images, nc=80)


def box_strategy(size: float):
    coord = st.integers(0, int(size) * 2).map(lambda v: v / 2)
    return st.tuples(coord, coord, st.integers(1, 40), st.integers(1, 40)).map(
        lambda t: (t[0], t[1], t[0] + t[2], t[1] + t[3])
    )


@st.composite
def small_case(draw) -> tuple[list[Image], int]:
    nc = draw(st.integers(1, 3))
    n_images = draw(st.integers(1, 4))
    images = []
    for image_id in range(1, n_images + 1):
        gts = draw(st.lists(st.tuples(box_strategy(40), st.integers(0, nc - 1)), max_size=5))
        # scores from a small set so ties are common
        score = st.sampled_from([0.1, 0.25, 0.5, 0.5, 0.75, 0.9])
        gt_like = draw(
            st.lists(
                st.tuples(st.integers(0, max(len(gts) - 1, 0)), st.integers(-3, 3), score, st.booleans()),
                max_size=8 if gts else 0,
            )
        )
        free = draw(st.lists(st.tuples(box_strategy(40), score, st.integers(0, nc - 1)), max_size=4))
        boxes = np.array([g[0] for g in gts], dtype=np.float64).reshape(-1, 4)
        classes = np.array([g[1] for g in gts], dtype=np.int64)
        preds = [
            (*(boxes[i] + shift), s, classes[i] if same else (classes[i] + 1) % nc) for i, shift, s, same in gt_like
        ]
        preds += [(*b, s, c) for b, s, c in free]
        images.append((image_id, boxes, classes, np.array(preds, dtype=np.float64).reshape(-1, 6)))
    return images, nc


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_case())
def test_random_small_cases_agree_with_cocoeval(case) -> None:
    images, nc = case
    assert_agree(images, nc)


@st.composite
def grid_case(draw) -> tuple[list[Image], int]:
    """Crowded integer boxes on a tiny grid: many exact IoU ties and IoUs equal to thresholds."""
    box = st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(1, 4), st.integers(1, 4))
    nc = draw(st.integers(1, 2))
    images = []
    for image_id in range(1, draw(st.integers(1, 3)) + 1):
        gts = draw(st.lists(st.tuples(box, st.integers(0, nc - 1)), min_size=1, max_size=6))
        dts = draw(
            st.lists(
                st.tuples(box, st.sampled_from([0.2, 0.5, 0.5, 0.8]), st.integers(0, nc - 1)),
                max_size=10,
            )
        )
        xyxy = lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3])  # noqa: E731
        boxes = np.array([xyxy(b) for b, _ in gts], dtype=np.float64)
        classes = np.array([c for _, c in gts], dtype=np.int64)
        preds = np.array([(*xyxy(b), s, c) for b, s, c in dts], dtype=np.float64).reshape(-1, 6)
        images.append((image_id, boxes, classes, preds))
    return images, nc


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid_case())
def test_crowded_grid_cases_agree_with_cocoeval(case) -> None:
    images, nc = case
    assert_agree(images, nc)


def test_detections_on_images_without_ground_truth_count_as_false_positives() -> None:
    gt = np.array([[0.0, 0.0, 10.0, 10.0]])
    hit = np.array([[0.0, 0.0, 10.0, 10.0, 0.5, 0]])
    stray = np.array([[20.0, 20.0, 30.0, 30.0, 0.9, 0]])  # scored above the hit
    images = [(1, gt, np.zeros(1, dtype=np.int64), hit), (2, np.zeros((0, 4)), np.zeros(0, dtype=np.int64), stray)]
    assert_agree(images, nc=1)
    # the stray comes first: precision .5 at recall 1 (interpolated back to recall 0); without it AP would be 1
    assert ours(images, nc=1).map50 == pytest.approx(0.5)
    only_strays = [(1, np.zeros((0, 4)), np.zeros(0, dtype=np.int64), stray)]
    assert coco_maps(only_strays, nc=1) == (-1.0, -1.0)  # COCOeval: undefined without any ground truth
    assert_agree(only_strays, nc=1)
    no_detections = [(1, gt, np.zeros(1, dtype=np.int64), np.zeros((0, 6)))]
    assert coco_maps(no_detections, nc=1) == (0.0, 0.0)
    assert_agree(no_detections, nc=1)


def test_equal_iou_goes_to_the_later_gt_as_in_cocoeval() -> None:
    """d1 ties between g1 and g2 (IoU .78 each); COCOeval gives it the later gt, g2, which leaves
    g1 to d2 (IoU 1). Giving d1 g1 instead would leave d2 only g2 (IoU .6)."""
    gts = np.array([[0.0, 0.0, 4.0, 4.0], [1.0, 0.0, 5.0, 4.0]])
    preds = np.array([[0.5, 0.0, 4.5, 4.0, 0.9, 0], [0.0, 0.0, 4.0, 4.0, 0.8, 0]])
    images = [(1, gts, np.zeros(2, dtype=np.int64), preds)]
    assert_agree(images, nc=1)
    # IoU .8 and up: d1 misses, d2 matches g1 second (recall .5 at precision .5)
    expected = [1.0] * 6 + [51 * 0.5 / 101] * 4
    assert ours(images, nc=1).ap_per_iou[0].tolist() == pytest.approx(expected)


def test_predictions_json_of_a_low_confidence_model_gives_cocoeval_our_map(tmp_path) -> None:
    """Issue 21: a model still in warm-up scores every box below 0.013 yet ranks them well. Here every hit scores
    a little above every false positive of its class, all within one 5-decimal value per class (0.012, 0.0045),
    and each image lists its false positives first. Written unrounded, predictions.json gives COCOeval the
    float32 scores our evaluator ranks, and the two agree; rounded to 5 decimals, as it was, the scores tie and
    COCOeval breaks the ties by file order, false positives first."""
    rng = np.random.default_rng(21)
    band = np.array([0.012, 0.0045])  # the 5-decimal value of each class's scores
    step = 1e-8  # 10+ float32 steps apart: every score distinct
    miss_offsets, hit_offsets = iter(rng.permutation(np.arange(10, 200))), iter(rng.permutation(np.arange(250, 450)))
    images, records = [], []
    for image_id in range(1, 31):
        m = int(rng.integers(1, 6))
        xy = rng.uniform(0, 400, (m, 2))
        boxes = np.c_[xy, xy + rng.uniform(20, 120, (m, 2))]
        classes = rng.integers(0, 2, m)
        hits = boxes + rng.normal(0, 2, (m, 4))
        fp_xy = rng.uniform(0, 400, (m, 2))
        misses = np.c_[fp_xy, fp_xy + rng.uniform(20, 120, (m, 2))]
        miss_scores = band[classes] + step * np.array([next(miss_offsets) for _ in range(m)])
        hit_scores = band[classes] + step * np.array([next(hit_offsets) for _ in range(m)])
        preds = np.r_[np.c_[misses, miss_scores, classes], np.c_[hits, hit_scores, classes]].astype(np.float32)
        images.append((image_id, boxes, classes, preds))
        records += coco_json_records(f"images/{image_id:012d}.jpg", preds)
    path = write_coco_results(tmp_path / "predictions.json", records)

    written = json.loads(path.read_text())
    assert [r["score"] for r in written] == [float(s) for _, _, _, p in images for s in p[:, 4]]  # float32, exact
    assert len({r["score"] for r in written}) == len(written) and max(r["score"] for r in written) < 0.013
    gt = coco_ground_truth(images, nc=2)
    coco_map, coco_map50 = cocoeval_maps(gt, str(path))
    res = ours(images, nc=2)
    assert res.map == pytest.approx(coco_map, abs=1e-9) and res.map50 == pytest.approx(coco_map50, abs=1e-9)
    assert coco_map50 > 0.9  # the hits, ranked first, carry the AP

    for r in written:  # the file as it was written before: scores rounded to 5 decimals
        r["score"] = round(r["score"], 5)
    assert {r["score"] for r in written} == set(band)
    rounded = tmp_path / "rounded.json"
    rounded.write_text(json.dumps(written))
    assert cocoeval_maps(gt, str(rounded))[1] < coco_map50 - 0.2  # the ties broken against the hits
