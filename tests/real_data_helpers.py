"""Test helpers for issue 13: datasets of real-looking sizes and a detector whose answers are known.

`write_shapes_set` draws solid rectangles of one colour per class on a dark background, at image sizes
that are not multiples of 32 and aspect ratios other than 1, some touching the image border.
`ColourDetector` finds those rectangles again in letterboxed model input by their colour, so its boxes
are off by at most the resize blur of one pixel; it answers each found object with a few candidates
(slightly too large, shifted, shrunk) and a false positive, so AP is neither 0 nor 1 at every IoU
threshold and a box offset anywhere between the letterbox and the scale back changes mAP50-95.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

COLOURS = ((230, 40, 40), (40, 220, 40), (50, 60, 235))  # RGB, one per class
BACKGROUND = (25, 25, 25)  # far from every class colour and from the letterbox grey 114
NAMES = ["red", "green", "blue"]

# (width, height) of the generated images: none a multiple of 32, aspect ratios from 5:1 to 2:3
REAL_SIZES = ((640, 480), (500, 375), (333, 500), (1000, 200), (427, 640), (612, 459), (375, 500))


def draw_boxes(rng: np.random.Generator, w: int, h: int, classes: int = 3) -> list[tuple[int, int, int, int, int]]:
    """Up to one box per class: (class, x1, y1, x2, y2) integer pixel edges; some touch a border."""
    boxes = []
    for c in range(classes):
        if rng.random() < 0.2:
            continue
        bw, bh = int(rng.integers(w // 8, w // 3)), int(rng.integers(h // 8, h // 3))
        x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        if rng.random() < 0.35:  # on a border: the detector's slightly-too-large box sticks out there
            x1 = 0 if rng.random() < 0.5 else w - bw
        if rng.random() < 0.35:
            y1 = 0 if rng.random() < 0.5 else h - bh
        boxes.append((c, x1, y1, x1 + bw, y1 + bh))
    # objects of different classes may overlap; the later one is drawn on top, so keep them apart
    kept: list[tuple[int, int, int, int, int]] = []
    for b in boxes:
        if all(b[3] <= k[1] or k[3] <= b[1] or b[4] <= k[2] or k[4] <= b[2] for k in kept):
            kept.append(b)
    return kept


def write_shapes_set(
    root: Path, sizes=REAL_SIZES, n: int = 9, seed: int = 0, split: str = "val", fmt: str = ".png"
) -> tuple[Path, dict[str, list]]:
    """Write `n` images (sizes cycled from `sizes`) with labels and a data.yaml (train = val = `split`).

    Returns:
        The data.yaml and `{image path: [(cls, x1, y1, x2, y2), ...]}` in original pixels.
    """
    rng = np.random.default_rng(seed)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    truth: dict[str, list] = {}
    for k in range(n):
        w, h = sizes[k % len(sizes)]
        img = np.full((h, w, 3), BACKGROUND, np.uint8)
        boxes = draw_boxes(rng, w, h)
        for c, x1, y1, x2, y2 in boxes:
            img[y1:y2, x1:x2] = COLOURS[c]
        path = root / "images" / split / f"{k + 1:06d}{fmt}"
        cv2.imwrite(str(path), img[:, :, ::-1])
        rows = [
            f"{c} {(x1 + x2) / 2 / w:.8f} {(y1 + y2) / 2 / h:.8f} {(x2 - x1) / w:.8f} {(y2 - y1) / h:.8f}\n"
            for c, x1, y1, x2, y2 in boxes
        ]
        (root / "labels" / split / f"{k + 1:06d}.txt").write_text("".join(rows))
        truth[str(path)] = boxes
    names = "".join(f"  - {n}\n" for n in NAMES)
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/{split}\nval: images/{split}\nnames:\n{names}")
    return yaml, truth


class ColourDetector(torch.nn.Module):
    """Finds the class-coloured rectangles in `(B, 3, H, W)` input; eval output `(B, N, 4 + nc)` xywh px."""

    def __init__(self, nc: int = 3) -> None:
        super().__init__()
        self.nc = nc
        self.config = {"name": "colour-detector", "nc": nc}
        self.register_buffer("colours", torch.tensor(COLOURS[:nc], dtype=torch.float32) / 255.0)

    def fuse(self) -> ColourDetector:
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        b, _, h, w = x.shape
        per_class = 4  # candidates per found object
        out = torch.zeros(b, self.nc * per_class, 4 + self.nc)
        for i in range(b):
            for c in range(self.nc):
                mask = ((x[i] - self.colours[c][:, None, None]).abs() < 0.3).all(0)  # (H, W)
                if not mask.any():
                    continue
                ys, xs = mask.nonzero(as_tuple=True)
                x1, y1 = xs.min().item(), ys.min().item()
                x2, y2 = xs.max().item() + 1.0, ys.max().item() + 1.0
                bw, bh = x2 - x1, y2 - y1
                candidates = (
                    ((x1 - 2, y1 - 2, x2 + 2, y2 + 2), 0.9),  # 2 px too large: sticks out at a border
                    ((x1 + 0.12 * bw, y1, x2 + 0.12 * bw, y2), 0.7),  # shifted right
                    ((x1 + 0.1 * bw, y1 + 0.1 * bh, x2 - 0.1 * bw, y2 - 0.1 * bh), 0.5),  # shrunk
                    ((w - x2, h - y2, w - x1, h - y1), 0.95 if (x1 + y1) % 2 else 0.6),  # mirrored: a false
                    # positive, above the true box in some images so that mAP50 is below 1 too
                )
                for k, ((a, bb, cc, d), score) in enumerate(candidates):
                    row = out[i, c * per_class + k]
                    row[:4] = torch.tensor([(a + cc) / 2, (bb + d) / 2, cc - a, d - bb])
                    row[4 + c] = score
        return out


def coco_eval(truth: dict[str, list], predictions_json: Path, max_dets: int = 300) -> tuple[float, float]:
    """pycocotools' (mAP50, mAP50-95) of `predictions_json` against `truth` in original pixels."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations = [], []
    for path, boxes in truth.items():
        image_id = int(Path(path).stem)
        h, w = cv2.imread(path).shape[:2]
        images.append({"id": image_id, "width": w, "height": h, "file_name": Path(path).name})
        for c, x1, y1, x2, y2 in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": c,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in enumerate(NAMES)],
    }
    gt.createIndex()
    dt = gt.loadRes(json.loads(Path(predictions_json).read_text()))
    ev = COCOeval(gt, dt, "bbox")
    ev.params.maxDets = [1, 10, max_dets]  # the validator keeps 300 per image, COCO's summary 100
    ev.evaluate()
    ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recall points, classes), area 'all'

    def mean(p: np.ndarray) -> float:
        return float(p[p > -1].mean())

    return mean(precision[0]), mean(precision)
