"""The built-in demo dataset: procedural shapes on textured backgrounds, exact boxes, YOLO format.

Four classes with distinct shapes and colours (circle/red, square/green, triangle/blue,
cross/yellow, each colour jittered) on smooth low-saturation textures with pixel noise; 1-5
non-overlapping objects of 10-45 % of the image side (16-72 px at 160). Boxes are the exact pixel extents of each drawn
shape's mask. Beside each image, `masks/<split>/<stem>.png` holds its exact per-pixel classes
(background 0, shape class c as c + 1), and `data-multitask.yaml` declares the same images as the
segmentation splits (`seg_names`: background + the four shapes), so the demo also trains a
detection + segmentation model; `data.yaml` stays detection-only. Everything derives from `seed`,
so the files are identical on every machine; a version marker (`VERSION.json`) triggers
regeneration when the recipe or the sizes change.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from accelyolo.core.fileio import temporary_sibling
from accelyolo.data.cache import home_dir

DEMO_VERSION = 2  # 2: masks and data-multitask.yaml added (images and labels as in 1)
DEMO_NAMES = ["circle", "square", "triangle", "cross"]
DEMO_SEG_NAMES = ["background", *DEMO_NAMES]
_COLOURS = np.array([[220, 40, 40], [40, 190, 60], [50, 80, 230], [235, 215, 40]], np.float32)  # RGB


def demo_data_yaml(root: str | Path | None = None) -> Path:
    """Path of the demo data.yaml, generating the dataset first when missing or outdated.

    Args:
        root: dataset folder; default `$ACCELYOLO_HOME/demo` or `~/.cache/accelyolo/demo`.
    """
    root = Path(root) if root is not None else home_dir() / "demo"
    return generate_demo(root)


def demo_multitask_yaml(root: str | Path | None = None) -> Path:
    """Path of the demo's detection + segmentation data.yaml (generating the dataset when needed)."""
    return demo_data_yaml(root).with_name("data-multitask.yaml")


def generate_demo(root: str | Path, n_train: int = 400, n_val: int = 100, imgsz: int = 160, seed: int = 0) -> Path:
    """Write the demo dataset to `root` (unless an identical one is there); returns its data.yaml.

    The dataset is built in a temporary sibling folder and moved into place, so concurrent
    processes (e.g. several ranks) never see a half-written dataset.
    """
    root = Path(root)
    marker = {"version": DEMO_VERSION, "n_train": n_train, "n_val": n_val, "imgsz": imgsz, "seed": seed}
    if _marker_matches(root, marker):
        return root / "data.yaml"
    root.parent.mkdir(parents=True, exist_ok=True)
    with temporary_sibling(root) as tmp:  # removed afterwards unless moved into place
        rng = np.random.default_rng(seed)
        for split, n in (("train", n_train), ("val", n_val)):
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            (tmp / "masks" / split).mkdir(parents=True)
            for k in range(n):
                img, rows, mask = _demo_image(rng, imgsz)
                stem = f"{split}_{k:05d}"
                cv2.imwrite(str(tmp / "images" / split / f"{stem}.png"), img[:, :, ::-1])
                cv2.imwrite(str(tmp / "masks" / split / f"{stem}.png"), mask)
                text = "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in rows)
                (tmp / "labels" / split / f"{stem}.txt").write_text(text)
        names = "".join(f"  - {n}\n" for n in DEMO_NAMES)
        yaml_text = f"path: .\ntrain: images/train\nval: images/val\nnc: {len(DEMO_NAMES)}\nnames:\n{names}"
        (tmp / "data.yaml").write_text(yaml_text)
        seg_names = "".join(f"  - {n}\n" for n in DEMO_SEG_NAMES)
        (tmp / "data-multitask.yaml").write_text(
            f"{yaml_text}seg_train: images/train\nseg_val: images/val\nseg_ignore: 255\nseg_names:\n{seg_names}"
        )
        (tmp / "VERSION.json").write_text(json.dumps(marker))
        _move_into_place(tmp, root, marker)
    return root / "data.yaml"


def _marker_matches(root: Path, marker: dict) -> bool:
    try:
        return json.loads((root / "VERSION.json").read_text()) == marker
    except (OSError, ValueError):
        return False


def _move_into_place(tmp: Path, root: Path, marker: dict) -> None:
    """Replace `root` by `tmp`; if another process finished first with the same data, keep theirs."""
    if root.exists():
        if _marker_matches(root, marker):
            return
        old = root.with_name(f".{root.name}-old-{os.getpid()}")
        root.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        tmp.rename(root)
    except OSError:
        if not _marker_matches(root, marker):
            raise


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth low-saturation texture: a coarse random grid upsampled, plus a little noise."""
    base = rng.uniform(60, 190)
    coarse = base + rng.normal(0, 25, (rng.integers(3, 8), rng.integers(3, 8), 3))
    grey = coarse.mean(2, keepdims=True)
    coarse = grey + 0.35 * (coarse - grey)  # keep backgrounds greyish so shapes stand out
    img = cv2.resize(coarse.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    return img


def _shape_mask(cls: int, s: int, rng: np.random.Generator) -> np.ndarray:
    """Binary mask `(s, s)` of one shape of class `cls` with side `s`."""
    m = np.zeros((s, s), np.uint8)
    if cls == 0:
        cv2.circle(m, (s // 2, s // 2), max(s // 2 - 1, 2), 1, -1)
    elif cls == 1:
        side = int(s * rng.uniform(0.7, 1.0))
        o = (s - side) // 2
        m[o : o + side, o : o + side] = 1
    elif cls == 2:
        pts = np.array([[s // 2, 0], [s - 1, s - 1], [0, s - 1]], np.int32)
        if rng.random() < 0.5:  # pointing down
            pts[:, 1] = s - 1 - pts[:, 1]
        cv2.fillPoly(m, [pts], 1)
    else:
        t = max(s // 4, 2)
        c = (s - t) // 2
        m[c : c + t, :] = 1
        m[:, c : c + t] = 1
    return m


def _demo_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple], np.ndarray]:
    """One RGB image, its YOLO rows `(cls, cx, cy, w, h)` and its class-id mask (background 0, class c -> c + 1)."""
    img = _background(rng, size)
    occupied = np.zeros((size, size), bool)
    classes = np.zeros((size, size), np.uint8)
    rows = []
    for _ in range(int(rng.integers(1, 6))):
        cls = int(rng.integers(len(DEMO_NAMES)))
        s = int(rng.integers(max(6, round(0.1 * size)), round(0.45 * size) + 1))  # 16-72 px at 160
        for _try in range(20):  # non-overlapping placement, boxes never touch each other
            x, y = (int(v) for v in rng.integers(0, size - s + 1, 2))
            if not occupied[max(y - 2, 0) : y + s + 2, max(x - 2, 0) : x + s + 2].any():
                break
        else:
            continue
        mask = _shape_mask(cls, s, rng).astype(bool)
        colour = np.clip(_COLOURS[cls] + rng.normal(0, 15, 3), 0, 255)
        img[y : y + s, x : x + s][mask] = colour
        classes[y : y + s, x : x + s][mask] = cls + 1
        bx, by, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
        occupied[y + by : y + by + bh, x + bx : x + bx + bw] = True
        cx, cy = (x + bx + bw / 2) / size, (y + by + bh / 2) / size
        rows.append((cls, cx, cy, bw / size, bh / size))
    img = img + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), rows, classes
