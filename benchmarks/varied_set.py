"""A generated single-class data set of large objects in images of varied sizes and shapes (YOLO format).

    python benchmarks/varied_set.py OUT_DIR [--train 160] [--val 40] [--seed 0]

The last line printed is the data.yaml path. Unlike the built-in demo (small shapes of four classes in
square 160 px images), this set asks for precise boxes on images that letterboxing and rectangular
batches must handle: widths 320-800 px, aspect ratios (width / height) 0.5-2.0, JPEG files, 1-3
objects of one class, each 15-70 % of the image's width and height. An object is a saturated, striped
ellipse, rectangle, parallelogram or convex polygon with a dark outline, so its edges are sharp;
the background is a noisy grating texture with unlabelled distractors (desaturated solid shapes and
lines) drawn under the objects. Boxes are the exact pixel extents of each object's mask. Everything
derives from the seed; a marker file (`VERSION.json`) lets a second call with the same arguments
return at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from accelyolo.core.fileio import temporary_sibling
from accelyolo.data.demo import _marker_matches, _move_into_place

VARIED_VERSION = 1
VARIED_NAMES = ["target"]
WIDTHS = (320, 800)
ASPECTS = (0.5, 2.0)  # width / height, drawn log-uniformly
OBJECT_FRACTION = (0.15, 0.70)  # of the image's width (box width) and height (box height)
JPEG_QUALITY = 92


def make_varied_set(root: str | Path, n_train: int = 160, n_val: int = 40, seed: int = 0) -> Path:
    """Write the data set to `root` (unless the same one is there) and return its data.yaml.

    The files are written to a temporary sibling folder and moved into place, so a reader never sees a
    half-written set.
    """
    root = Path(root).resolve()
    marker = {"version": VARIED_VERSION, "n_train": n_train, "n_val": n_val, "seed": seed}
    if _marker_matches(root, marker):
        return root / "data.yaml"
    root.parent.mkdir(parents=True, exist_ok=True)
    with temporary_sibling(root) as tmp:
        rng = np.random.default_rng(seed)
        for split, n in (("train", n_train), ("val", n_val)):
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for k in range(n):
                img, rows = varied_image(rng)
                stem = f"{split}_{k:05d}"
                cv2.imwrite(
                    str(tmp / "images" / split / f"{stem}.jpg"),
                    img[:, :, ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
                )
                text = "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in rows)
                (tmp / "labels" / split / f"{stem}.txt").write_text(text)
        names = "".join(f"  - {n}\n" for n in VARIED_NAMES)
        (tmp / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnc: 1\nnames:\n{names}")
        (tmp / "VERSION.json").write_text(json.dumps(marker))
        _move_into_place(tmp, root, marker)
    return root / "data.yaml"


def image_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) of one image: width uniform in WIDTHS, aspect ratio log-uniform in ASPECTS."""
    width = int(rng.integers(WIDTHS[0], WIDTHS[1] + 1))
    aspect = float(np.exp(rng.uniform(np.log(ASPECTS[0]), np.log(ASPECTS[1]))))
    return max(round(width / aspect), 32), width


def varied_image(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One RGB image `(H, W, 3)` and its YOLO rows `(0, cx, cy, w, h)`, normalised to the image."""
    height, width = image_size(rng)
    img = _grating_background(rng, height, width)
    for _ in range(int(rng.integers(2, 7))):
        _draw_distractor(img, rng)
    taken = np.zeros((height, width), bool)
    rows = []
    for _ in range(int(rng.integers(1, 4))):
        box = _place_object(img, taken, rng)
        if box is not None:
            x, y, w, h = box
            rows.append((0, (x + w / 2) / width, (y + h / 2) / height, w / width, h / height))
    img += rng.normal(0, 5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), rows


def _hsv_colour(hue: float, saturation: float, value: float) -> np.ndarray:
    """RGB float colour from hue in [0, 180) and saturation, value in [0, 255] (OpenCV's HSV ranges)."""
    pixel = np.array([[[hue, saturation, value]]], np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _grating_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A greyish texture: two or three sinusoidal gratings of random period and direction, per-pixel noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    grey = np.full((height, width), rng.uniform(70, 180), np.float32)
    for _ in range(int(rng.integers(2, 4))):
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(8, 120)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period)
        grey += rng.uniform(6, 22) * np.sin(phase + rng.uniform(0, 2 * np.pi))
    tint = rng.normal(0, 8, 3).astype(np.float32)  # a faint colour cast
    img = grey[:, :, None] + tint + rng.normal(0, 10, (height, width, 3)).astype(np.float32)
    return img


def _draw_distractor(img: np.ndarray, rng: np.random.Generator) -> None:
    """An unlabelled shape: a desaturated solid polygon or disc without outline, or a line."""
    height, width = img.shape[:2]
    colour = _hsv_colour(rng.uniform(0, 180), rng.uniform(0, 70), rng.uniform(40, 230)).tolist()
    side = min(height, width)
    cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
    size = int(side * rng.uniform(0.05, 0.25))
    kind = int(rng.integers(3))
    if kind == 0:
        thickness = max(1, int(side * rng.uniform(0.005, 0.02)))
        end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(img, (cx, cy), end, colour, thickness, cv2.LINE_AA)
    elif kind == 1:
        cv2.circle(img, (cx, cy), max(size // 2, 2), colour, -1, cv2.LINE_AA)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, 3))
        points = np.stack([cx + size * np.cos(angles), cy + size * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(img, [points], colour, cv2.LINE_AA)


def _object_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Binary mask `(h, w)` of one object whose extents are its whole (h, w) frame."""
    mask = np.zeros((h, w), np.uint8)
    kind = int(rng.integers(3))
    if kind == 0:
        cv2.ellipse(mask, (w // 2, h // 2), (max(w // 2 - 1, 1), max(h // 2 - 1, 1)), 0, 0, 360, 1, -1)
        return mask
    if kind == 1:  # a rectangle, turned by up to 25 degrees in half of the cases (a parallelogram once fitted)
        angle = rng.uniform(-25, 25) if rng.random() < 0.5 else 0.0
        points = cv2.boxPoints(((0.0, 0.0), (float(w), float(h)), angle))
    else:  # a convex polygon of 5-8 corners
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 9))))
        points = np.stack([np.cos(angles), np.sin(angles)], 1)
    low, high = points.min(0), points.max(0)
    points = (points - low) / np.maximum(high - low, 1e-6) * [w - 1, h - 1]  # stretched onto the frame
    cv2.fillPoly(mask, [cv2.convexHull(np.round(points).astype(np.int32))], 1)
    return mask


def _place_object(img: np.ndarray, taken: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int] | None:
    """Draw one object where it overlaps no other; returns its box `(x, y, w, h)` in pixels, or None."""
    height, width = img.shape[:2]
    w = int(width * rng.uniform(*OBJECT_FRACTION))
    h = int(height * rng.uniform(*OBJECT_FRACTION))
    w, h = min(w, 4 * h), min(h, 4 * w)  # no needle-thin objects; with ASPECTS, each side stays >= 15 %
    for _try in range(20):
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        if not taken[max(y - 4, 0) : y + h + 4, max(x - 4, 0) : x + w + 4].any():
            break
    else:
        return None
    mask = _object_mask(rng, h, w)
    bx, by, bw, bh = cv2.boundingRect(mask)
    if bw < 2 or bh < 2:
        return None
    inside = mask.astype(bool)
    outline = max(2, round(0.03 * min(w, h)))
    kernel = np.ones((3, 3), np.uint8)  # the frame's border counts as outside, so edges on it get an outline
    core = cv2.erode(mask, kernel, iterations=outline, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    edge = inside & ~core.astype(bool)
    hue = rng.uniform(0, 180)
    fill = _hsv_colour(hue, rng.uniform(170, 255), rng.uniform(170, 255))
    stripe = _hsv_colour(hue, rng.uniform(60, 120), 255)
    period = max(6, round(min(w, h) * rng.uniform(0.12, 0.25)))
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = ((xx + yy) // (period // 2)) % 2 == 1  # diagonal bands
    region = img[y : y + h, x : x + w]
    region[inside] = fill
    region[inside & stripes] = stripe
    region[edge] = _hsv_colour(hue, 200, rng.uniform(20, 60))
    taken[y + by : y + by + bh, x + bx : x + bx + bw] = True
    return x + bx, y + by, bw, bh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=160, help="training images")
    parser.add_argument("--val", type=int, default=40, help="validation images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.train < 1 or args.val < 1:
        print("--train and --val must be at least 1", file=sys.stderr)
        return 2
    print(make_varied_set(args.out_dir, n_train=args.train, n_val=args.val, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
