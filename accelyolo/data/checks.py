"""Per-file checks of a YOLO dataset and the image decoder everything else uses.

Every problem is returned as text next to its file, never raised: a bad file must not stop a run,
and a bad label row drops only that row. The rules follow YOLOv5's dataset checks:

- image: must decode, both sides >= `MIN_IMAGE_SIDE` px, a JPEG must end with its end marker
  (a truncated JPEG is skipped; the dataset is never rewritten);
- label rows: exactly 5 numbers `class cx cy w h`, class an integer in `[0, nc)`, no negative
  value, values above 1 by at most `COORD_TOLERANCE` are clipped (beyond: the row is dropped),
  zero-area boxes dropped, duplicate rows removed. Box edges that stick out of the image are
  clipped to it (the box is kept).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

# The one list of image suffixes (lower case), for dataset folders, .txt lists and `predict --source`:
# every format Pillow decodes that photo datasets use.
IMG_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")
MIN_IMAGE_SIDE = 10
COORD_TOLERANCE = 1e-6


def img2label_path(image: str | Path) -> Path:
    """Label file of an image: the last `/images/` component becomes `/labels/`, suffix `.txt`.

    Without an `images` folder in the path the label sits beside the image (same stem, `.txt`).
    """
    parts = list(Path(image).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_label_text(path: Path) -> str:
    """Read one label file (a separate function so tests can count label reads)."""
    return path.read_text(encoding="utf-8")


def _oriented_size(im: Image.Image) -> tuple[int, int]:
    """(h, w) of an opened image after its EXIF orientation is applied."""
    w, h = im.size
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not make a good image unusable
        orientation = 1
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def verify_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """Check that `path` is a usable image.

    Returns:
        `((h, w), None)` for a good image (shape after EXIF rotation), `(None, problem)` otherwise.
    """
    try:
        with Image.open(path) as im:
            im.verify()  # structure / CRC checks without a full decode
        with Image.open(path) as im:
            shape = _oriented_size(im)
            fmt = im.format
    except Exception as err:  # Pillow raises many types for non-images
        return None, f"corrupt image, not readable as an image ({type(err).__name__}: {err})"
    if min(shape) < MIN_IMAGE_SIDE:
        return None, f"corrupt image, size {shape[1]}x{shape[0]} is below {MIN_IMAGE_SIDE} px"
    if fmt in ("JPEG", "MPO"):
        with open(path, "rb") as f:
            f.seek(-2, 2)
            if f.read() != b"\xff\xd9":
                return None, "corrupt image, truncated JPEG (no end marker); skipped"
    return shape, None


def parse_label_rows(text: str, nc: int | None) -> tuple[np.ndarray, list[str]]:
    """Parse label text into `(n, 5)` float32 rows `cls cx cy w h`, dropping bad rows.

    Args:
        text: the label file's content.
        nc: number of classes; class ids `>= nc` are dropped (None: no class check).

    Returns:
        The kept rows and one problem string per dropped/changed row (with its line number).
    """
    labels, problems = label_rows(text, nc)
    return labels, [p if line is None else f"line {line}: {p}" for line, p in problems]


def label_rows(text: str, nc: int | None) -> tuple[np.ndarray, list[tuple[int | None, str]]]:
    """`parse_label_rows` with each problem as `(line number or None for the whole file, reason)`."""
    rows: list[list[float]] = []
    problems: list[tuple[int | None, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            problems.append((lineno, f"{len(fields)} columns, expected 5; row dropped"))
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            problems.append((lineno, f"not numeric ({line.strip()!r}); row dropped"))
            continue
        row, problem = _check_row(values, nc)
        if problem:
            problems.append((lineno, problem))
        if row is not None:
            rows.append(row)
    labels = np.array(rows, dtype=np.float32).reshape(-1, 5)
    if len(labels):
        _, first = np.unique(labels, axis=0, return_index=True)
        if len(first) < len(labels):
            problems.append((None, f"{len(labels) - len(first)} duplicate rows removed"))
            labels = labels[np.sort(first)]
    return labels, problems


def _check_row(values: list[float], nc: int | None) -> tuple[list[float] | None, str | None]:
    """Check one parsed row; returns (row or None if dropped, problem text or None)."""
    cls, coords = values[0], values[1:]
    if not all(math.isfinite(v) for v in values):
        return None, "non-finite value; row dropped"
    if cls < 0 or any(v < 0 for v in coords):
        return None, "negative value; row dropped"
    if cls != int(cls):
        return None, f"class {cls} is not an integer; row dropped"
    if nc is not None and cls >= nc:
        return None, f"class {int(cls)} >= nc={nc}; row dropped"
    if any(v > 1 + COORD_TOLERANCE for v in coords):
        return None, "coordinate above 1 (not normalized); row dropped"
    problem = None
    coords = [min(v, 1.0) for v in coords]
    cx, cy, w, h = coords
    if w <= 0 or h <= 0:
        return None, "zero-area box; row dropped"
    x1, y1, x2, y2 = max(cx - w / 2, 0.0), max(cy - h / 2, 0.0), min(cx + w / 2, 1.0), min(cy + h / 2, 1.0)
    if (cx - w / 2 < -COORD_TOLERANCE or cy - h / 2 < -COORD_TOLERANCE) or (
        cx + w / 2 > 1 + COORD_TOLERANCE or cy + h / 2 > 1 + COORD_TOLERANCE
    ):
        problem = "box extends outside the image; clipped"
    if x2 <= x1 or y2 <= y1:
        return None, "zero-area box after clipping; row dropped"
    return [cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], problem


def check_image_label(image: Path, nc: int | None) -> dict[str, Any]:
    """Run every check on one image and its label file.

    Returns:
        A JSON-ready dict: `file`, `status` (`ok`, `background` or `corrupt`), `shape` `[h, w]`,
        `labels` (list of `[cls, cx, cy, w, h]`), `problems` (list of `{file, line, problem}`: the
        image or label file, the label line or None, the reason), and the counts `missing`, `empty`,
        `duplicates`, `rows_dropped`, `rows_clipped`, `class_out_of_range` for the split's totals.
    """
    entry: dict[str, Any] = {"file": str(image), "status": "corrupt", "shape": None, "labels": []}
    entry.update(problems=[], missing=False, empty=False, duplicates=0, rows_dropped=0)
    entry.update(rows_clipped=0, class_out_of_range=0)

    def report(problem: str, file: Path = image, line: int | None = None) -> None:
        entry["problems"].append({"file": str(file), "line": line, "problem": problem})

    shape, problem = verify_image(image)
    if problem:
        report(problem)
        return entry
    entry["shape"] = list(shape)
    label_path = img2label_path(image)
    if not label_path.is_file():
        entry.update(status="background", missing=True)
        report(f"missing label {label_path}; kept as a background image")
        return entry
    try:
        text = read_label_text(label_path)
    except (OSError, UnicodeDecodeError) as err:
        report(f"label file {label_path} unreadable ({err}); image skipped", label_path)
        return entry
    labels, row_problems = label_rows(text, nc)
    for line, p in row_problems:
        report(p if line is None else f"line {line}: {p}", label_path, line)
        if "duplicate" in p:
            entry["duplicates"] += int(p.split()[0])
        elif "dropped" in p:
            entry["rows_dropped"] += 1
            entry["class_out_of_range"] += ">= nc" in p
        elif "clipped" in p:
            entry["rows_clipped"] += 1
    entry["labels"] = labels.tolist()
    if len(labels):
        entry["status"] = "ok"
    else:
        entry.update(status="background", empty=not row_problems)
        if not row_problems:
            report("empty label; background image", label_path)
    return entry


def load_rgb(path: str | Path, long_side: int | None = None, fast: bool = True) -> np.ndarray:
    """Decode an image to RGB uint8 `(H, W, 3)`, EXIF-rotated, optionally resized.

    Greyscale, RGBA (alpha dropped), palette and CMYK images all come back as RGB.

    Args:
        path: the image file.
        long_side: resize so the longer side is exactly this (both down and up, as YOLOv5's
            `load_image`); None keeps the original size.
        fast: allow JPEG decoding at a reduced DCT scale when the target is at most half the
            size (much faster; pixels differ slightly from a full decode) and bilinear resizing.
    """
    with Image.open(path) as im:
        h0, w0 = _oriented_size(im)  # original size after EXIF rotation
        if long_side is not None and fast and im.format == "JPEG":
            r = long_side / max(w0, h0)
            # draft() picks the largest DCT scale (1/2, 1/4, 1/8) that keeps >= the requested size
            im.draft("RGB", (max(1, math.ceil(im.size[0] * r)), max(1, math.ceil(im.size[1] * r))))
        im = ImageOps.exif_transpose(im)
        if im.mode != "RGB":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB").convert("RGB")
        img = np.asarray(im)
    if long_side is not None:
        h, w = img.shape[:2]
        r = long_side / max(h0, w0)
        # the target size comes from the original size, so it never depends on the DCT scale
        size = (max(1, round(w0 * r)), max(1, round(h0 * r)))
        if size != (w, h):
            interp = cv2.INTER_LINEAR if (fast or size[0] > w) else cv2.INTER_AREA
            img = cv2.resize(img, size, interpolation=interp)
    if not img.flags.writeable or not img.flags.c_contiguous:
        img = np.ascontiguousarray(img).copy()
    return img
