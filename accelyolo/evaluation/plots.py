"""PNG pictures with Pillow only: batches with their boxes, and the label distribution."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from accelyolo.core.boxes import xywhn2xyxy

_PALETTE = [
    (255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49),
    (72, 249, 10), (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187),
    (44, 153, 168), (0, 194, 255), (52, 69, 147), (100, 115, 255), (0, 24, 236),
    (132, 56, 255), (82, 0, 133), (203, 56, 255), (255, 149, 200), (255, 55, 199),
]  # fmt: skip


def class_colour(cls: int) -> tuple[int, int, int]:
    """A stable colour per class id."""
    return _PALETTE[int(cls) % len(_PALETTE)]


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def draw_boxes(
    image: np.ndarray | Image.Image,
    boxes: Any,
    classes: Any,
    names: Sequence[str] | None = None,
    scores: Any = None,
    width: int = 1,
) -> Image.Image:
    """Draw pixel `xyxy` boxes `(n, 4)` with class names (and scores) on a copy of `image`.

    Args:
        image: RGB uint8 `(H, W, 3)` array or a PIL image.
        boxes: `(n, 4)` x1, y1, x2, y2 in pixels.
        classes: `(n,)` class ids.
        names: class names for the labels (ids are shown without them).
        scores: optional `(n,)` confidences shown after the name.
        width: line width in px.
    """
    im = image.copy() if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    draw = ImageDraw.Draw(im)
    boxes, classes = _to_numpy(boxes).reshape(-1, 4), _to_numpy(classes).reshape(-1)
    scores = None if scores is None else _to_numpy(scores).reshape(-1)
    for k, (box, c) in enumerate(zip(boxes, classes)):
        colour = class_colour(int(c))
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        text = names[int(c)] if names is not None and int(c) < len(names) else str(int(c))
        if scores is not None:
            text += f" {scores[k]:.2f}"
        tx, ty = x1, max(y1 - 10, 0)
        draw.rectangle(draw.textbbox((tx, ty), text), fill=colour)
        draw.text((tx, ty), text, fill=(255, 255, 255))
    return im


def plot_batch(
    images: Any,
    targets: Any,
    paths: Sequence[str],
    names: Sequence[str],
    fname: str | Path,
    preds: Sequence[Any] | None = None,
    max_images: int = 16,
) -> Path:
    """Save `batch_grid(...)` of a batch with its boxes as PNG (the arguments of `batch_grid`, and `fname`)."""
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    batch_grid(images, targets, paths, names, preds, max_images).save(fname)
    return fname


def batch_grid(
    images: Any,
    targets: Any,
    paths: Sequence[str],
    names: Sequence[str],
    preds: Sequence[Any] | None = None,
    max_images: int = 16,
) -> Image.Image:
    """A grid of a batch's images with their label boxes and/or predicted boxes, as one RGB picture.

    Args:
        images: uint8 `(B, 3, H, W)` tensor or array (a collated batch).
        targets: `(N, 6)` = image index, class, cx, cy, w, h normalized, or None.
        paths: image paths (file names are written under each tile).
        names: class names.
        preds: optional per-image `(n, 6)` = x1, y1, x2, y2 (pixels), confidence, class.
        max_images: at most this many tiles.
    """
    imgs = _to_numpy(images)[:max_images]
    if imgs.dtype != np.uint8:  # float batches in [0, 1]
        imgs = (np.clip(imgs, 0, 1) * 255).astype(np.uint8)
    b, _, h, w = imgs.shape
    cols = math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    grid = Image.new("RGB", (cols * w, rows * (h + 12)), (255, 255, 255))
    t = None if targets is None else _to_numpy(targets).reshape(-1, 6)
    for i in range(b):
        tile = Image.fromarray(imgs[i].transpose(1, 2, 0))
        if t is not None:
            ti = t[t[:, 0] == i]
            tile = draw_boxes(tile, xywhn2xyxy(ti[:, 2:6], w, h), ti[:, 1], names)
        if preds is not None and i < len(preds):
            p = _to_numpy(preds[i]).reshape(-1, 6)
            tile = draw_boxes(tile, p[:, :4], p[:, 5], names, scores=p[:, 4])
        x, y = (i % cols) * w, (i // cols) * (h + 12)
        grid.paste(tile, (x, y))
        if i < len(paths):
            ImageDraw.Draw(grid).text((x + 2, y + h), Path(paths[i]).name[:40], fill=(0, 0, 0))
    return grid


def plot_labels(labels: Sequence[np.ndarray] | np.ndarray, names: Sequence[str], fname: str | Path) -> Path:
    """Save the label distribution as PNG: class histogram, box centres, box sizes.

    Args:
        labels: per-image `(n, 5)` arrays (cls, cx, cy, w, h normalized) or one stacked array.
        names: class names (the histogram has one bar per class).
        fname: output PNG.
    """
    lb = np.concatenate([np.asarray(x).reshape(-1, 5) for x in labels]) if len(labels) else np.zeros((0, 5))
    panel, pad = 300, 30
    im = Image.new("RGB", (3 * panel + 4 * pad, panel + 2 * pad + 40), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    # class histogram
    nc = max(len(names), 1)
    counts = np.bincount(lb[:, 0].astype(int), minlength=nc)[:nc] if len(lb) else np.zeros(nc, int)
    x0, y0 = pad, pad
    draw.rectangle([x0, y0, x0 + panel, y0 + panel], outline=(0, 0, 0))
    bar = panel / nc
    top = max(int(counts.max()), 1)
    for c, n in enumerate(counts):
        bh = panel * n / top
        draw.rectangle([x0 + c * bar, y0 + panel - bh, x0 + (c + 1) * bar - 1, y0 + panel], fill=class_colour(c))
    draw.text((x0, y0 + panel + 4), f"instances per class (max {top}), {len(lb)} boxes", fill=(0, 0, 0))
    if nc <= 12:
        for c, name in enumerate(names):
            draw.text((x0 + c * bar + 2, y0 + panel + 16), str(name)[:6], fill=(0, 0, 0))
    # centre and size scatter plots
    for k, (cols, title) in enumerate((((1, 2), "box centres x, y"), ((3, 4), "box sizes w, h"))):
        x0 = pad + (k + 1) * (panel + pad)
        draw.rectangle([x0, y0, x0 + panel, y0 + panel], outline=(0, 0, 0))
        for row in lb[:20000]:
            px, py = x0 + row[cols[0]] * panel, y0 + row[cols[1]] * panel
            draw.point((px, py), fill=class_colour(int(row[0])))
        draw.text((x0, y0 + panel + 4), title + " (0..1)", fill=(0, 0, 0))
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    im.save(fname)
    return fname


def plot_results(rows: Sequence[dict[str, Any]], fname: str | Path, columns_per_row: int = 5) -> Path:
    """`results.png`: one small line chart per loss and metric column of results.csv rows, against epoch.

    Args:
        rows: results.csv rows (dicts with an `epoch` key); empty or non-numeric cells are skipped, so the
            metric charts show only the validated epochs. Learning rates and times are left out.
        fname: output PNG.
        columns_per_row: charts per row of the picture.
    """
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch" and not k.startswith("lr/") and k != "time_s"]
    panel_w, panel_h, pad = 220, 150, 28
    cols = max(1, min(columns_per_row, len(keys)))
    grid_rows = max(1, math.ceil(len(keys) / cols))
    im = Image.new("RGB", (cols * panel_w, grid_rows * panel_h), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for n, key in enumerate(keys):
        x0, y0 = (n % cols) * panel_w, (n // cols) * panel_h
        points = [(float(r["epoch"]), v) for r in rows if (v := _number(r.get(key))) is not None]
        draw.text((x0 + 6, y0 + 4), key, fill=(0, 0, 0))
        left, top, right, bottom = x0 + pad, y0 + 20, x0 + panel_w - 10, y0 + panel_h - 18
        draw.rectangle([left, top, right, bottom], outline=(180, 180, 180))
        if not points:
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        x_lo, x_hi = min(xs), max(xs)
        y_lo, y_hi = min(ys), max(ys)
        x_span, y_span = (x_hi - x_lo) or 1.0, (y_hi - y_lo) or 1.0
        xy = [
            (left + (x - x_lo) / x_span * (right - left), bottom - (y - y_lo) / y_span * (bottom - top))
            for x, y in points
        ]
        if len(xy) > 1:
            draw.line(xy, fill=class_colour(0), width=2)
        for px, py in xy:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=class_colour(11))
        draw.text((x0 + 2, top), f"{y_hi:.3g}", fill=(90, 90, 90))
        draw.text((x0 + 2, bottom - 10), f"{y_lo:.3g}", fill=(90, 90, 90))
        draw.text((left, bottom + 3), f"epoch {x_lo:g}", fill=(90, 90, 90))
        draw.text((right - 40, bottom + 3), f"{x_hi:g}", fill=(90, 90, 90))
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    im.save(fname)
    return fname


def _number(value: Any) -> float | None:
    """A finite float from a results cell (float, int or text), or None for an empty or bad one."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
