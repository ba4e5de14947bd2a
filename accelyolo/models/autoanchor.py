"""Autoanchor: check that an anchor-based model's anchors fit the training boxes, and refit them if not.

Best possible recall (BPR) is the share of training boxes that some anchor can match, i.e. whose width
and height are both within a factor `thr` of that anchor's (the loss's `anchor_t` rule). Below 0.98
the anchors are refitted: k-means on the boxes' (w, h), then a genetic search that mutates them to
maximise the mean best-anchor ratio. The refit is kept only if it raises BPR; it is written into the
model's `head.anchors` buffer, so it reaches every checkpoint. Deterministic for a given `seed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["anchor_metrics", "check_anchors", "kmean_anchors"]

logger = logging.getLogger(__name__)

BPR_THRESHOLD = 0.98


def anchor_metrics(anchors: np.ndarray, wh: np.ndarray, thr: float) -> tuple[float, float]:
    """(BPR, anchors above threshold per box) of `anchors` (K, 2) for boxes `wh` (n, 2), same units."""
    ratio = _ratios(anchors, wh)  # (n, K)
    return float((ratio.max(1) > 1 / thr).mean()), float((ratio > 1 / thr).sum(1).mean())


def _ratios(anchors: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """Worse-side ratio (<= 1) of every box to every anchor, (n, K); 1 = identical shapes."""
    r = wh[:, None] / anchors[None]  # (n, K, 2)
    return np.minimum(r, 1 / r).min(2)


def _fitness(anchors: np.ndarray, wh: np.ndarray, thr: float) -> float:
    """Mean best ratio over boxes, counting only those that clear the threshold (what evolution maximises)."""
    best = _ratios(anchors, wh).max(1)
    return float((best * (best > 1 / thr)).mean())


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 30) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding on points (n, d) -> centroids (k, d)."""
    centroids = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = ((x[:, None] - np.array(centroids)[None]) ** 2).sum(-1).min(1)
        total = d2.sum()
        centroids.append(x[rng.choice(len(x), p=d2 / total)] if total > 0 else x[rng.integers(len(x))])
    c = np.array(centroids, dtype=np.float64)
    for _ in range(iters):
        assign = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)  # (n,)
        new = np.array([x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c


def kmean_anchors(wh: np.ndarray, n: int, thr: float = 4.0, gen: int = 1000, seed: int = 0) -> np.ndarray:
    """Fit `n` anchors to boxes `wh` (m, 2) pixels: k-means, then genetic evolution; sorted by area.

    Args:
        wh: box widths and heights in pixels; boxes under 2 px on both sides are ignored.
        n: anchors to fit (levels x anchors per level).
        thr: the `anchor_t` ratio threshold.
        gen: generations of evolution (each mutates all anchors; a mutation is kept if it scores better).
        seed: random seed.
    """
    rng = np.random.default_rng(seed)
    wh = wh[(wh >= 2.0).any(1)].astype(np.float64)
    if len(wh) == 0:
        raise ValueError("kmean_anchors: no label box is 2 px or larger at this image size; check the labels")
    if len(wh) >= n:
        std = wh.std(0)
        std[std == 0] = 1.0
        k = _kmeans(wh / std, n, rng) * std  # whitened k-means, as scipy.cluster.vq.kmeans expects
    else:  # fewer boxes than anchors: start from jittered copies of the boxes
        k = wh[rng.integers(len(wh), size=n)] * rng.uniform(0.8, 1.25, size=(n, 2))
    best = _fitness(k, wh, thr)
    mutation_prob, sigma = 0.9, 0.1
    for _ in range(gen):
        v = np.ones_like(k)
        while (v == 1).all():  # mutate until something changes
            v = (rng.random(k.shape) < mutation_prob) * rng.random() * rng.standard_normal(k.shape) * sigma + 1
            v = v.clip(0.3, 3.0)
        candidate = (k * v).clip(min=2.0)
        score = _fitness(candidate, wh, thr)
        if score > best:
            best, k = score, candidate
    return k[np.argsort(k.prod(1))]


def _label_wh(
    labels: Sequence[np.ndarray], shapes: np.ndarray | None, imgsz: int, rng: np.random.Generator
) -> np.ndarray:
    """Box (w, h) in pixels at training size, each image scaled by a random 0.9-1.1 (as augmentation does)."""
    if shapes is None:
        sizes = np.full((len(labels), 2), float(imgsz))  # (N, 2) w, h
    else:
        shapes = np.asarray(shapes, dtype=np.float64)
        if shapes.shape != (len(labels), 2):
            raise ValueError(
                f"check_anchors: shapes must be (N, 2) image (h, w) with N = {len(labels)} "
                f"(one per label array), got {shapes.shape}"
            )
        sizes = imgsz * shapes[:, ::-1] / shapes.max(1, keepdims=True)  # long side -> imgsz, as (w, h)
    sizes = sizes * rng.uniform(0.9, 1.1, size=(len(labels), 1))
    parts = [np.asarray(lb, dtype=np.float64).reshape(-1, 5)[:, 3:5] * s for lb, s in zip(labels, sizes)]
    return np.concatenate(parts) if parts else np.zeros((0, 2))


def check_anchors(
    model: nn.Module,
    labels: Sequence[np.ndarray],
    shapes: np.ndarray | None,
    imgsz: int,
    thr: float = 4.0,
    seed: int = 0,
    print_fn: Callable[[str], None] | None = None,
    gen: int = 1000,
) -> dict[str, float | bool]:
    """Report the anchors' BPR on the training labels and refit the anchors when it is below 0.98.

    Args:
        model: an anchor-based model (its `head.anchors` buffer, (nl, na, 2) pixels, is updated in place).
        labels: per image an (n, 5) array [class, cx, cy, w, h] normalised.
        shapes: (N, 2) image (h, w) after letterbox-resize, or None for square `imgsz` images.
        imgsz: training image size in pixels.
        thr: the loss's `anchor_t`.
        seed: random seed (scale jitter, k-means, evolution).
        print_fn: where the report lines go (default: this module's logger at INFO).
        gen: evolution generations.

    Returns:
        {"bpr_before": float, "bpr_after": float, "replaced": bool}.
    """
    say = print_fn or logger.info
    model = getattr(model, "module", model)
    head = getattr(model, "head", None)
    if not hasattr(head, "anchors"):
        raise ValueError("check_anchors: the model has no head.anchors (an anchor-based model, e.g. yolov5s)")
    rng = np.random.default_rng(seed)
    wh = _label_wh(labels, shapes, imgsz, rng)
    current = head.anchors.detach().float().cpu().numpy().reshape(-1, 2).astype(np.float64)
    if len(wh) == 0:
        say("autoanchor: no label boxes; anchors kept")
        return {"bpr_before": float("nan"), "bpr_after": float("nan"), "replaced": False}
    bpr, aat = anchor_metrics(current, wh, thr)
    say(f"autoanchor: {aat:.2f} anchors/target, best possible recall {bpr:.4f} with anchors {_fmt(current)}")
    if bpr >= BPR_THRESHOLD:
        return {"bpr_before": bpr, "bpr_after": bpr, "replaced": False}
    if not (wh >= 2.0).any():  # k-means fits boxes of 2 px or more: nothing to fit to
        say("autoanchor: no label box is 2 px or larger at this image size; anchors kept (check the labels)")
        return {"bpr_before": bpr, "bpr_after": bpr, "replaced": False}
    new = kmean_anchors(wh, len(current), thr=thr, gen=gen, seed=seed)
    new_bpr, new_aat = anchor_metrics(new, wh, thr)
    if new_bpr <= bpr:
        say(f"autoanchor: refit reached best possible recall {new_bpr:.4f}, not better; original anchors kept")
        return {"bpr_before": bpr, "bpr_after": bpr, "replaced": False}
    with torch.no_grad():
        head.anchors.copy_(torch.from_numpy(new).view_as(head.anchors).to(head.anchors))
    say(
        f"autoanchor: new anchors {_fmt(new)}: {new_aat:.2f} anchors/target, best possible recall "
        f"{bpr:.4f} -> {new_bpr:.4f}; stored in the model (and its checkpoints)"
    )
    return {"bpr_before": bpr, "bpr_after": new_bpr, "replaced": True}


def _fmt(anchors: np.ndarray) -> str:
    """Anchors as 'w,h' pairs rounded to pixels."""
    return " ".join(f"{w:.0f},{h:.0f}" for w, h in anchors)
