"""Detection metrics: COCO AP (101-point, IoU 0.50:0.95), P/R at best F1, confusion matrix.

`DetectionEvaluator` collects one compact record per image (`add`), can hand the records to other
processes and merge theirs (`records` / `extend`, for DDP gathering), and computes everything at
once (`compute`) with array operations over all images, so validation does not pay per-image
matching costs.

The AP numbers reproduce pycocotools' `COCOeval` for bounding boxes (area "all", 100 detections
per image and class; crowd regions, `iscrowd: 1`, as COCOeval treats them, see `_crowd_ignored`): the
same greedy matching by score, the same tie order (stable sort by score; across images, images in
increasing id order), the same IoU (no +1) and the same
101-point interpolated precision. Precision and recall are read at the confidence that maximises
the (smoothed) mean F1 over classes at IoU 0.5, as YOLOv5 reports them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# The exact threshold arrays COCOeval uses, so threshold comparisons agree bit for bit.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # (T,)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # (R,)
MAX_DETS = 100  # COCOeval's maxDets[-1], applied per (image, class)
CONF_GRID = np.linspace(0.0, 1.0, 1000)  # confidences at which P, R and F1 curves are sampled
CONFUSION_CONF = 0.25  # YOLOv5's confusion-matrix detection threshold (conf > 0.25)
CONFUSION_IOU = 0.45  # ... and match threshold (IoU > 0.45)
FITNESS_WEIGHTS = (0.0, 0.0, 0.1, 0.9)  # P, R, mAP50, mAP50-95


@dataclass(eq=False)
class DetectionResult:
    """Everything `DetectionEvaluator.compute` measures.

    Per-class arrays (`ap50`, `ap`, `ap_per_iou`, `p`, `r`, `f1`, `p_curve`, ...) have one row per
    entry of `classes`: the class indices with at least one ground-truth box. Classes without ground
    truth are left out of every mean (COCO's -1); classes with ground truth and no detection have
    AP 0. `n_images` and `n_instances` have one entry per class index (length `nc`).
    """

    mp: float  # mean precision at `best_conf`
    mr: float  # mean recall at `best_conf`
    map50: float  # mean AP at IoU 0.5
    map: float  # mean AP over IoU 0.50:0.95
    fitness: float  # 0.1 * map50 + 0.9 * map
    classes: np.ndarray  # (K,) class indices with ground truth
    ap50: np.ndarray  # (K,)
    ap: np.ndarray  # (K,) AP averaged over the 10 IoU thresholds
    ap_per_iou: np.ndarray  # (K, T)
    p: np.ndarray  # (K,) precision at best_conf
    r: np.ndarray  # (K,) recall at best_conf
    f1: np.ndarray  # (K,) F1 at best_conf
    n_images: np.ndarray  # (nc,) images that contain the class
    n_instances: np.ndarray  # (nc,) ground-truth boxes of the class
    seen: int  # images evaluated
    best_conf: float  # confidence of maximum mean F1
    max_score: float = 0.0  # highest detection score over all images (0: no detection); see `Trainer.why_not_best`
    conf_grid: np.ndarray = field(default_factory=lambda: CONF_GRID.copy())  # (C,)
    p_curve: np.ndarray = field(default_factory=lambda: np.zeros((0, CONF_GRID.size)))  # (K, C)
    r_curve: np.ndarray = field(default_factory=lambda: np.zeros((0, CONF_GRID.size)))  # (K, C)
    f1_curve: np.ndarray = field(default_factory=lambda: np.zeros((0, CONF_GRID.size)))  # (K, C)
    pr_recall: np.ndarray = field(default_factory=lambda: RECALL_THRESHOLDS.copy())  # (R,)
    pr_precision: np.ndarray = field(default_factory=lambda: np.zeros((0, 101)))  # (K, R) IoU .5
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((1, 1)))  # (nc+1, nc+1)

    def as_dict(self) -> dict[str, float]:
        """The headline numbers under the names used in `results.csv` and the trackers."""
        return {
            "precision": float(self.mp),
            "recall": float(self.mr),
            "mAP50": float(self.map50),
            "mAP50-95": float(self.map),
            "fitness": float(self.fitness),
            "max_score": float(self.max_score),
        }


def fitness(metrics: DetectionResult | Mapping[str, float]) -> float:
    """Model selection score: 0.0*P + 0.0*R + 0.1*mAP50 + 0.9*mAP50-95 (YOLOv5's weights).

    Args:
        metrics: a `DetectionResult`, or a mapping with the keys of `DetectionResult.as_dict`
            ("precision", "recall", "mAP50", "mAP50-95"), e.g. a row of results.csv.
    """
    if isinstance(metrics, DetectionResult):
        values = (metrics.mp, metrics.mr, metrics.map50, metrics.map)
    else:
        keys = ("precision", "recall", "mAP50", "mAP50-95")
        missing = [k for k in keys if k not in metrics]
        if missing:
            raise KeyError(f"fitness() needs the keys {keys}; missing {missing} in {dict(metrics)}")
        values = tuple(float(metrics[k]) for k in keys)
    return float(sum(w * v for w, v in zip(FITNESS_WEIGHTS, values, strict=True)))


def coco_json_records(
    image_path: str, dets_xyxy: Any, image_id: Any = None, category_ids: list[int] | None = None
) -> list[dict[str, Any]]:
    """Detections of one image in COCO's result format (for `predictions.json`).

    Args:
        image_path: the image file; without `image_id`, its stem is the `image_id` (an int when it is
            all digits, as COCO's val2017 file names are).
        dets_xyxy: (n, 6) x1 y1 x2 y2 conf cls in the image's original pixels (numpy or tensor).
        image_id: the image's id in a COCO annotation file, written as it is.
        category_ids: the COCO category id of each class index (None: the index itself).

    Returns:
        One dict per detection: `image_id`, `category_id` (`category_ids[cls]`, else the class index),
        `bbox` as `[x, y, w, h]`
        and `score`, none of them rounded. The file is for evaluators, which rank detections by the score
        they read: scores rounded to 5 decimals tied most detections of a low-confidence model (all scores in
        0.001..0.013) and COCOeval then scored them 0.025 mAP50-95 where ours, on the float32 scores, said
        0.152. `w` and `h` are kept exact too, so that COCO's `x + w` lands on our `x2` (see `coco_iou`).
    """
    if image_id is None:
        stem = Path(image_path).stem
        image_id = int(stem) if stem.isascii() and stem.isdigit() else stem
    dets = _to_numpy(dets_xyxy).astype(np.float64).reshape(-1, 6)
    xywh = np.concatenate([dets[:, :2], dets[:, 2:4] - dets[:, :2]], axis=1)  # (n, 4), exact differences
    category = (lambda c: int(c)) if category_ids is None else (lambda c: int(category_ids[int(c)]))
    return [
        {"image_id": image_id, "category_id": category(cls), "bbox": [float(v) for v in box], "score": float(score)}
        for box, score, cls in zip(xywh, dets[:, 4], dets[:, 5], strict=True)
    ]


def write_coco_results(path: str | Path, records: list[dict[str, Any]]) -> Path:
    """Write `coco_json_records` output as a COCO results file (`predictions.json`). Python's JSON writes
    each float as the shortest text that reads back as the same double, so nothing is lost on the way."""
    path = Path(path)
    path.write_text(json.dumps(records))
    return path


class DetectionEvaluator:
    """Accumulates per-image predictions and labels; computes COCO mAP and YOLO-style P/R.

    Args:
        nc: number of classes; class indices must lie in [0, nc).
        names: class names (only checked for length; reports use them).
    """

    def __init__(self, nc: int, names: list[str] | None = None) -> None:
        if nc < 1:
            raise ValueError(f"DetectionEvaluator needs nc >= 1, got nc={nc}")
        if names is not None and len(names) != nc:
            raise ValueError(f"DetectionEvaluator: {len(names)} names given for nc={nc} classes")
        self.nc = nc
        self.names = list(names) if names is not None else [str(i) for i in range(nc)]
        self._records: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def add(
        self,
        image_id: str,
        preds: Any,
        gt_boxes: Any,
        gt_classes: Any,
        crowd_boxes: Any = None,
        crowd_classes: Any = None,
    ) -> None:
        """Store one image's predictions and labels (numpy arrays or tensors on any device).

        Args:
            image_id: a unique key for the image (e.g. its path). A repeated id is ignored, so the
                duplicates that DDP even batching adds do not count twice.
            preds: (n, 6) x1 y1 x2 y2 conf cls, after NMS.
            gt_boxes: (m, 4) x1 y1 x2 y2 in the same pixel space as `preds`.
            gt_classes: (m,) class indices.
            crowd_boxes: (k, 4) xyxy crowd regions (COCO `iscrowd: 1`) in the same space; a detection
                matched to one is neither a true nor a false positive, and they count for no recall.
            crowd_classes: (k,) their class indices.
        """
        image_id = str(image_id)
        if image_id in self._records:
            return
        where = f"DetectionEvaluator.add(image_id={image_id!r})"
        p = _to_numpy(preds).astype(np.float32)
        if p.size == 0:
            p = p.reshape(0, 6)
        if p.ndim != 2 or p.shape[1] != 6:
            raise ValueError(f"{where}: preds must be (n, 6) x1 y1 x2 y2 conf cls, got {p.shape}")
        b = _to_numpy(gt_boxes).astype(np.float32)
        if b.size == 0:
            b = b.reshape(0, 4)
        c = _to_numpy(gt_classes).reshape(-1)
        if b.ndim != 2 or b.shape[1] != 4 or c.shape[0] != b.shape[0]:
            raise ValueError(f"{where}: gt_boxes must be (m, 4) xyxy and gt_classes (m,), got {b.shape} and {c.shape}")
        if not (np.isfinite(p).all() and np.isfinite(b).all()):
            raise ValueError(f"{where}: preds or gt_boxes contain NaN/inf; check the model output")
        cb = np.zeros((0, 4), np.float32) if crowd_boxes is None else _to_numpy(crowd_boxes).astype(np.float32)
        cc = np.zeros(0, np.int64) if crowd_classes is None else _to_numpy(crowd_classes).reshape(-1)
        cb = cb.reshape(-1, 4)
        if cc.shape[0] != cb.shape[0]:
            raise ValueError(f"{where}: crowd_boxes {cb.shape} and crowd_classes {cc.shape} differ in length")
        for label, cls in (("preds[:, 5]", p[:, 5]), ("gt_classes", c), ("crowd_classes", cc)):
            if cls.size and (cls.min() < 0 or cls.max() >= self.nc or (cls % 1 != 0).any()):
                raise ValueError(
                    f"{where}: {label} must hold integer class indices in [0, {self.nc}), "
                    f"got values in [{cls.min()}, {cls.max()}]; check the dataset's nc/names"
                )
        self._records[image_id] = {
            "image_id": image_id,
            "preds": np.ascontiguousarray(p),
            "gt_boxes": np.ascontiguousarray(b),
            "gt_classes": c.astype(np.int64),
            "crowd_boxes": np.ascontiguousarray(cb),
            "crowd_classes": cc.astype(np.int64),
        }

    def records(self) -> list[dict[str, Any]]:
        """This evaluator's per-image records: plain dicts of numpy arrays and a str id."""
        return list(self._records.values())

    def extend(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Merge records (e.g. gathered from all ranks); ids already present are skipped."""
        for rec in records:
            self.add(
                rec["image_id"],
                rec["preds"],
                rec["gt_boxes"],
                rec["gt_classes"],
                rec.get("crowd_boxes"),
                rec.get("crowd_classes"),
            )

    def reset(self) -> None:
        """Forget every record (start a new validation pass)."""
        self._records.clear()

    def compute(self) -> DetectionResult:
        """Match, accumulate and summarise all stored images; see `DetectionResult`."""
        recs = [self._records[k] for k in sorted(self._records, key=_image_sort_key)]
        dets, det_img = _stack([r["preds"] for r in recs], 6)
        gts, gt_img = _stack([np.c_[r["gt_boxes"], r["gt_classes"]] for r in recs], 5)
        gt_cls = gts[:, 4].astype(np.int64)
        confusion = confusion_matrix(dets, det_img, gts[:, :4], gt_cls, gt_img, self.nc)
        n_instances = np.bincount(gt_cls, minlength=self.nc)
        img_cls = np.unique(gt_img * self.nc + gt_cls)
        n_images = np.bincount(img_cls % self.nc, minlength=self.nc)

        d = _order_and_truncate(dets, det_img, self.nc)
        matched = _greedy_match(d, gts[:, :4], gt_cls, gt_img, self.nc)  # (T, N)
        crowd, crowd_img = _stack([np.c_[r["crowd_boxes"], r["crowd_classes"]] for r in recs], 5)
        crowd_ignored = _crowd_ignored(d, matched, crowd, crowd_img, self.nc)  # (T, N)
        classes = np.flatnonzero(n_instances)
        acc = _accumulate(d, matched, classes, n_instances, crowd_ignored)
        result = _summarise(acc, classes, n_images, n_instances, len(recs), confusion)
        result.max_score = float(dets[:, 4].max()) if len(dets) else 0.0
        return result


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy copy of an array-like or a tensor on any device (half precisions widened)."""
    if hasattr(x, "detach"):
        t = x.detach().cpu()
        if t.is_floating_point():
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def _image_sort_key(image_id: str) -> tuple[int, int, str]:
    """Images in COCO's order: numeric stems by value (as COCOeval sorts int ids), then others."""
    stem = Path(image_id).stem
    if stem.isascii() and stem.isdigit():
        return (0, int(stem), image_id)
    return (1, 0, image_id)


def _stack(arrays: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-image rows into (N, width) float64 plus the image index of each row."""
    if not arrays:
        return np.zeros((0, width)), np.zeros(0, dtype=np.int64)
    counts = np.array([len(a) for a in arrays])
    rows = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1, width) for a in arrays])
    return rows, np.repeat(np.arange(len(arrays)), counts)


def _segment_starts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted `keys`: start index of each run and, per element, its offset inside its run."""
    n = keys.size
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    lengths = np.diff(np.r_[starts, n])
    return starts, np.arange(n) - np.repeat(starts, lengths)


def _order_and_truncate(dets: np.ndarray, det_img: np.ndarray, nc: int) -> dict[str, np.ndarray]:
    """Sort detections by (image, class, -score) stably and keep the first MAX_DETS of each group.

    COCOeval sorts each (image, category) list with a stable mergesort on -score in the order the
    detections were given, then truncates it to maxDets.
    """
    score = dets[:, 4]
    cls = dets[:, 5].astype(np.int64)
    order = np.lexsort((np.arange(len(dets)), -score, cls, det_img))
    group = (det_img * nc + cls)[order]
    _, rank = _segment_starts(group)
    keep = order[rank < MAX_DETS]
    return {
        "box": dets[keep, :4],
        "score": score[keep],
        "cls": cls[keep],
        "img": det_img[keep],
        "group": group[rank < MAX_DETS],
        "rank": rank[rank < MAX_DETS],
    }


def coco_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise IoU of paired xyxy boxes (P, 4), (P, 4) -> (P,), computed as COCO does.

    COCO works on xywh and takes x + w as the right edge, so the arithmetic follows that path
    (float64, no +1) to land on the same floats at threshold boundaries.
    """
    aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    w = np.minimum(a[:, 0] + aw, b[:, 0] + bw) - np.maximum(a[:, 0], b[:, 0])
    h = np.minimum(a[:, 1] + ah, b[:, 1] + bh) - np.maximum(a[:, 1], b[:, 1])
    inter = w * h
    union = aw * ah + bw * bh - inter
    ok = (w > 0) & (h > 0)
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def _pairs(d_key: np.ndarray, g_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (detection, gt) index pairs with equal keys; `g_key` must be sorted.

    Pairs come out grouped by detection, gts in their sorted order inside each detection.
    """
    lo = np.searchsorted(g_key, d_key, side="left")
    cnt = np.searchsorted(g_key, d_key, side="right") - lo
    pd = np.repeat(np.arange(d_key.size), cnt)
    offset = np.arange(pd.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    return pd, np.repeat(lo, cnt) + offset


def _greedy_match(
    d: dict[str, np.ndarray], g_box: np.ndarray, g_cls: np.ndarray, g_img: np.ndarray, nc: int
) -> np.ndarray:
    """COCOeval's greedy matching at every IoU threshold; returns matched flags (T, N).

    In score order, each detection takes the unmatched gt of its image and class with the highest
    IoU >= t (on equal IoU, the later gt, as COCOeval's `<` comparison does). Only the order inside
    one (image, class) group matters, so all groups advance together: step k handles the k-th
    detection of every group at once, for all thresholds. Only detections with some IoU >= 0.5
    take part, so the loop runs over the ranks that occur among those (at most MAX_DETS).
    """
    n_t = IOU_THRESHOLDS.size
    matched = np.zeros((n_t, d["score"].size), dtype=bool)
    g_order = np.argsort(g_img * nc + g_cls, kind="stable")  # gts keep their given order per group
    pd, pg = _pairs(d["group"], (g_img * nc + g_cls)[g_order])
    pg = g_order[pg]
    iou = coco_iou(d["box"][pd], g_box[pg])
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]  # (T, 1) COCOeval's cap
    cand = iou >= thr[0, 0]
    pd, pg, iou = pd[cand], pg[cand], iou[cand]
    if pd.size == 0:
        return matched
    step = np.argsort(d["rank"][pd], kind="stable")  # stable: keeps det-then-gt grouping
    pd, pg, iou = pd[step], pg[step], iou[step]
    gt_taken = np.zeros((n_t, g_box.shape[0]), dtype=bool)
    bounds = np.flatnonzero(np.r_[True, np.diff(d["rank"][pd]) != 0, True])  # rank boundaries
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        sd, sg, si = pd[lo:hi], pg[lo:hi], iou[lo:hi]  # (P,) pairs of this rank
        starts, _ = _segment_starts(sd)
        seg = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, sd.size]))
        valid = (si >= thr) & ~gt_taken[:, sg]  # (T, P)
        key = np.where(valid, si, -1.0)
        best = np.maximum.reduceat(key, starts, axis=1)  # (T, S)
        pick = valid & (key == best[:, seg])
        last = np.maximum.reduceat(np.where(pick, np.arange(sd.size), -1), starts, axis=1)
        t_idx, s_idx = np.nonzero(last >= 0)
        chosen = last[t_idx, s_idx]
        gt_taken[t_idx, sg[chosen]] = True
        matched[t_idx, sd[chosen]] = True
    return matched


def _crowd_ignored(
    d: dict[str, np.ndarray], matched: np.ndarray, crowd: np.ndarray, crowd_img: np.ndarray, nc: int
) -> np.ndarray:
    """(T, N) flags: detections COCOeval ignores because they match a crowd region.

    COCOeval sorts crowd gts after the others and lets a detection fall through to them only when no
    regular gt matched it; a crowd region is never used up, and its IoU divides by the detection's area
    alone. So regular matching is unchanged by crowds, and an unmatched detection is ignored at threshold
    t when its best crowd IoU of the same image and class is >= t.
    """
    ignored = np.zeros_like(matched)
    if crowd.shape[0] == 0 or d["score"].size == 0:
        return ignored
    key = crowd_img * nc + crowd[:, 4].astype(np.int64)
    order = np.argsort(key, kind="stable")
    pd, pc = _pairs(d["group"], key[order])
    pc = order[pc]
    a, b = d["box"][pd], crowd[pc, :4]
    aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]  # COCO's arithmetic, as in `coco_iou`
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    w = np.minimum(a[:, 0] + aw, b[:, 0] + bw) - np.maximum(a[:, 0], b[:, 0])
    h = np.minimum(a[:, 1] + ah, b[:, 1] + bh) - np.maximum(a[:, 1], b[:, 1])
    ok = (w > 0) & (h > 0)
    iof = np.where(ok, w * h / np.where(ok, aw * ah, 1.0), 0.0)  # intersection over the detection's area
    best = np.zeros(d["score"].size)
    np.maximum.at(best, pd, iof)
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]  # (T, 1) COCOeval's cap
    return ~matched & (best[None] >= thr)


def _accumulate(
    d: dict[str, np.ndarray],
    matched: np.ndarray,
    classes: np.ndarray,
    n_instances: np.ndarray,
    crowd_ignored: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per class: 101-point interpolated precision (T, R), raw P/R against confidence at IoU .5.

    Detections of one class are ordered as COCOeval concatenates them (images by id, each image's
    list by score) and then stably sorted by score over the whole set.
    """
    box = d["box"]
    area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    ignored = ~matched & ((area < 0) | (area > 1e10))[None]  # COCO's area range "all"
    if crowd_ignored is not None:
        ignored |= crowd_ignored
    order = np.lexsort((d["rank"], d["img"], -d["score"], d["cls"]))
    cls_sorted = d["cls"][order]
    lo = np.searchsorted(cls_sorted, classes, side="left")
    hi = np.searchsorted(cls_sorted, classes, side="right")
    n_k, n_t, n_r, n_c = classes.size, IOU_THRESHOLDS.size, RECALL_THRESHOLDS.size, CONF_GRID.size
    precision = np.zeros((n_k, n_t, n_r))
    p_curve, r_curve = np.zeros((n_k, n_c)), np.zeros((n_k, n_c))
    for k, c in enumerate(classes):  # a loop over classes; every step is vectorised
        idx = order[lo[k] : hi[k]]
        if idx.size == 0:
            continue  # gt but no detection: AP 0, curves 0
        tp = np.cumsum(matched[:, idx] & ~ignored[:, idx], axis=1, dtype=np.float64)  # (T, n)
        fp = np.cumsum(~matched[:, idx] & ~ignored[:, idx], axis=1, dtype=np.float64)
        rc = tp / n_instances[c]
        pr = tp / (fp + tp + np.spacing(1))
        envelope = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
        for t in range(n_t):
            at = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")  # (R,)
            inside = at < idx.size
            precision[k, t, inside] = envelope[t, at[inside]]
        conf = d["score"][idx]
        p_curve[k] = np.interp(-CONF_GRID, -conf, pr[0], left=1.0)
        r_curve[k] = np.interp(-CONF_GRID, -conf, rc[0], left=0.0)
    return {"precision": precision, "p_curve": p_curve, "r_curve": r_curve}


def smooth_curve(y: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Box filter over `fraction` of the samples, edges padded with the end values (YOLOv5).

    The best-F1 confidence is taken on the smoothed mean curve so one noisy class cannot pick it.
    """
    width = round(y.size * fraction * 2) // 2 + 1  # odd
    padded = np.r_[np.full(width // 2, y[0]), y, np.full(width // 2, y[-1])]
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def _summarise(
    acc: dict[str, np.ndarray],
    classes: np.ndarray,
    n_images: np.ndarray,
    n_instances: np.ndarray,
    seen: int,
    confusion: np.ndarray,
) -> DetectionResult:
    """Means, best-F1 operating point and fitness from the per-class accumulations."""
    ap_per_iou = acc["precision"].mean(axis=2)  # (K, T)
    p_curve, r_curve = acc["p_curve"], acc["r_curve"]
    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + 1e-16)
    if classes.size:
        best = int(smooth_curve(f1_curve.mean(axis=0)).argmax())
        ap50, ap = ap_per_iou[:, 0], ap_per_iou.mean(axis=1)
        map50, map_, mp, mr = ap50.mean(), ap.mean(), p_curve[:, best].mean(), r_curve[:, best].mean()
    else:  # no ground truth at all: nothing to measure, report zeros
        best, ap50, ap = 0, np.zeros(0), np.zeros(0)
        map50 = map_ = mp = mr = 0.0
    res = DetectionResult(
        mp=float(mp),
        mr=float(mr),
        map50=float(map50),
        map=float(map_),
        fitness=0.0,
        classes=classes,
        ap50=ap50,
        ap=ap,
        ap_per_iou=ap_per_iou,
        p=p_curve[:, best],
        r=r_curve[:, best],
        f1=f1_curve[:, best],
        n_images=n_images,
        n_instances=n_instances,
        seen=seen,
        best_conf=float(CONF_GRID[best]),
        p_curve=p_curve,
        r_curve=r_curve,
        f1_curve=f1_curve,
        pr_precision=acc["precision"][:, 0, :],
        confusion=confusion,
    )
    res.fitness = fitness(res)
    return res


def confusion_matrix(
    dets: np.ndarray,
    det_img: np.ndarray,
    g_box: np.ndarray,
    g_cls: np.ndarray,
    g_img: np.ndarray,
    nc: int,
    conf: float = CONFUSION_CONF,
    iou_thres: float = CONFUSION_IOU,
) -> np.ndarray:
    """YOLOv5's detection confusion matrix (nc+1, nc+1), rows predicted, columns true.

    Detections with conf > `conf` are matched to gts of the same image regardless of class
    (IoU > `iou_thres`, highest IoU first, one-to-one). Matched pairs count at
    [pred class, true class]; unmatched gts in the background row, unmatched detections in the
    background column. `det_img` and `g_img` are image indices in non-decreasing order.
    """
    matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)
    keep = dets[:, 4] > conf
    d_box, d_cls, d_img = dets[keep, :4], dets[keep, 5].astype(np.int64), det_img[keep]
    pd, pg = _pairs(d_img, g_img)
    iou = coco_iou(d_box[pd], g_box[pg])
    hit = iou > iou_thres
    pd, pg, iou = pd[hit], pg[hit], iou[hit]
    order = np.argsort(-iou, kind="stable")
    pd, pg, iou = pd[order], pg[order], iou[order]
    _, first = np.unique(pd, return_index=True)  # each detection: its best gt
    first = np.sort(first)  # back in descending-IoU order
    pd, pg = pd[first], pg[first]
    _, first = np.unique(pg, return_index=True)  # each gt: its best remaining detection
    pd, pg = pd[first], pg[first]
    np.add.at(matrix, (d_cls[pd], g_cls[pg]), 1)
    gt_free = np.ones(g_cls.size, dtype=bool)
    gt_free[pg] = False
    np.add.at(matrix, (np.full(gt_free.sum(), nc), g_cls[gt_free]), 1)
    det_free = np.ones(d_cls.size, dtype=bool)
    det_free[pd] = False
    np.add.at(matrix, (d_cls[det_free], np.full(det_free.sum(), nc)), 1)
    return matrix
