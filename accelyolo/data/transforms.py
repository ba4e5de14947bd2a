"""Augmentation and letterboxing: albumentations pipelines configured from YOLOv5 hyp names.

Train pipeline (one albumentations `Compose`, boxes in YOLO format with the class id as a 5th column),
all at `imgsz x imgsz`:
- mosaic sample (p=mosaic, decided by the dataset): `YoloMosaic` (2x2 mosaic on a 2s canvas and the
  random affine map in one resize or warp, YOLOv5's geometry) -> Perspective (if > 0) -> HSV gains -> flips;
- other sample: letterboxed to `imgsz` first, then (probability hyp `crop`, off by default) cropped by
  `A.RandomSizedBBoxSafeCrop` to a region holding every box and resized back -> `A.Affine`
  (scale/translate/rotate/shear, one scale factor for both axes) -> Perspective -> HSV -> flips.
A user's own pipeline (`augment: PATH`, an `albumentations.save` yaml) runs right after the mosaic /
crop step. Mixup (blend of two mosaics, ratio ~ Beta(32, 32)) is done by the dataset on two pipeline
outputs. When every step is one whose box geometry is known, the Compose runs without albumentations'
bbox processor and the boxes follow the applied parameters (`BoxFollowingCompose`, same boxes, faster).

Box rules (documented so they can be relied on; YOLOv5's `box_candidates` in spirit):
- a box is dropped when less than `MIN_VISIBILITY` (10 %) of its area survives a crop or the
  image border (mosaic tiles and the affine warp), when a side is under `MIN_BOX_SIDE` (2 px)
  in the output image, or when its aspect ratio exceeds `MAX_ASPECT` (100);
- surviving boxes are clipped to the image.

Mosaic backends: `"fast"` (default) is `YoloMosaic` below; `"albumentations"` uses `A.Mosaic` (followed
by `A.Affine`), which builds a Compose per cell and costs ~5.5 ms per call at 320 px on this CPU, more
than the whole per-image budget of the loader.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import cv2
import numpy as np

from accelyolo.core.boxes import xywh2xyxy, xywhn2xyxy, xyxy2xywh
from accelyolo.core.config import ConfigError
from accelyolo.core.hyp import augmentation_defaults

DEFAULT_HYP: dict[str, float] = augmentation_defaults()  # YOLOv5 hyp.scratch-low (accelyolo.core.hyp)
PAD_VALUE = 114
MIN_BOX_SIDE = 2.0
MIN_VISIBILITY = 0.1
MAX_ASPECT = 100.0


def resolve_hyp(hyp: Mapping[str, Any] | None) -> dict[str, float]:
    """`DEFAULT_HYP` updated with the augmentation keys of `hyp` (other keys are ignored)."""
    out = dict(DEFAULT_HYP)
    for key, value in (hyp or {}).items():
        if key in out:
            out[key] = float(value)
    return out


def letterbox(
    img: np.ndarray, shape: tuple[int, int], scaleup: bool = True
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize `img` to fit `shape` (h, w) keeping its aspect, pad the rest with grey 114, centred.

    Returns:
        `(image (h, w, 3), (ry, rx) scale applied, (pad_w, pad_h) left/top padding in px)`.
    """
    h, w = img.shape[:2]
    r = min(shape[0] / h, shape[1] / w)
    if not scaleup:
        r = min(r, 1.0)
    nw, nh = round(w * r), round(h * r)
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    dw, dh = shape[1] - nw, shape[0] - nh
    left, top = dw // 2, dh // 2
    if dw or dh:
        img = cv2.copyMakeBorder(img, top, dh - top, left, dw - left, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return img, (nh / h, nw / w), (left, top)


class HsvGain(A.ImageOnlyTransform):
    """YOLOv5's HSV jitter: multiply hue, saturation and value by gains `1 + U(-1, 1) * g`.

    Done with three 256-entry lookup tables, one per channel plane (cv2.LUT with a 3-channel table costs
    ~50 % more here); hue wraps around OpenCV's 0-179 range.
    """

    def __init__(self, hgain: float = 0.015, sgain: float = 0.7, vgain: float = 0.4, p: float = 1.0):
        super().__init__(p=p)
        self.hgain, self.sgain, self.vgain = hgain, sgain, vgain

    def get_params(self) -> dict[str, Any]:
        gains = [self.hgain, self.sgain, self.vgain]
        return {"r": [1 + self.py_random.uniform(-1, 1) * g for g in gains]}

    def apply(self, img: np.ndarray, r: list[float], **params: Any) -> np.ndarray:
        x = np.arange(256, dtype=np.float32)
        tables = ((x * r[0]) % 180, np.clip(x * r[1], 0, 255), np.clip(x * r[2], 0, 255))
        planes = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
        hsv = cv2.merge([cv2.LUT(p, t.astype(np.uint8)) for p, t in zip(planes, tables)])
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("hgain", "sgain", "vgain")


class YoloMosaic(A.DualTransform):
    """2x2 mosaic with YOLOv5's geometry, mapped once to `size x size`.

    The primary image and three donors meet at a random centre of a `2s x 2s` canvas (uniform in
    `[s/2, 3s/2]`; top-left, top-right, bottom-left, bottom-right), and one random affine map (YOLOv5's
    `random_perspective` without perspective: about the canvas centre, scale `1 +/- scale` (one factor for
    both axes), rotation `+/- degrees`, shear `+/- shear`, then a translation of the centre by
    `+/- translate` of the output) takes the canvas to the `s x s` output in one step: a `cv2.resize` of the
    part of the canvas in view when there is no rotation or shear (the default hyps; `_resized_window`),
    else a `cv2.warpAffine` of the canvas (`pixel_centre_map`). At scale 1 the output is the canvas' central
    `s x s` window; zooming out shows more of the four images (not grey padding), as in YOLOv5.

    The donors come in the Compose call as `mosaic_metadata=[{"image", "bboxes"}] * 3`, boxes in
    YOLO format `(n, 5)` = cx, cy, w, h, class. The primary's boxes are the call's `bboxes` (through
    albumentations' bbox processor) or, in a `BoxFollowingCompose`, its `mosaic_primary` YOLO rows.
    Boxes are clipped to the visible part of their tile (dropped below `MIN_VISIBILITY` of their area),
    moved through the map applied (hull of the corners; returned as `mosaic_matrix`) and filtered by
    `filter_boxes` in the output.
    """

    def __init__(
        self,
        size: int,
        fill: int = PAD_VALUE,
        scale: float = 0.0,
        translate: float = 0.0,
        degrees: float = 0.0,
        shear: float = 0.0,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.size, self.fill = size, fill
        self.scale, self.translate, self.degrees, self.shear = scale, translate, degrees, shear

    @property
    def targets_as_params(self) -> list[str]:
        return ["mosaic_metadata"]

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict:
        s, uniform = self.size, self.py_random.uniform
        rows = data["mosaic_primary"] if "mosaic_primary" in data else _albu_to_yolo(data["bboxes"])
        items = [{"image": data["image"], "bboxes": rows}, *data["mosaic_metadata"][:3]]
        xc, yc = int(uniform(0.5 * s, 1.5 * s)), int(uniform(0.5 * s, 1.5 * s))
        placed = []  # (image, x1, y1): tile corners on the canvas
        tiles, shifts, windows = [], [], []  # per tile with boxes: YOLO rows, px scale + shift, visible part
        for k, item in enumerate(items):
            img = item["image"]
            h, w = img.shape[:2]
            x1 = xc - w if k in (0, 2) else xc
            y1 = yc - h if k in (0, 1) else yc
            placed.append((img, x1, y1))
            b = np.asarray(item["bboxes"], dtype=np.float32).reshape(-1, 5)
            if len(b):
                vx1, vy1, vx2, vy2 = max(x1, 0), max(y1, 0), min(x1 + w, 2 * s), min(y1 + h, 2 * s)  # on the canvas
                tiles.append(b)
                shifts.append(np.tile([w, h, w, h, x1, y1, x1, y1], (len(b), 1)))
                windows.append(np.tile([vx1, vy1, vx2, vy2], (len(b), 1)))
        matrix = self._affine(uniform)
        if matrix[0, 1] == 0 and matrix[1, 0] == 0 and matrix[0, 0] == matrix[1, 1]:  # no rotation, no shear
            out, matrix = self._resized_window(placed, matrix)
        else:
            canvas = self._canvas(placed, 0, 0, 2 * s, 2 * s)
            out = cv2.warpAffine(canvas, pixel_centre_map(matrix), (s, s), flags=cv2.INTER_LINEAR,
                                 borderValue=(self.fill,) * 3)  # fmt: skip
        boxes = np.zeros((0, 5), np.float32)
        if tiles:  # all tiles' boxes at once: canvas pixels, clipped to their tile, through the warp
            b, shift, window = np.concatenate(tiles), np.concatenate(shifts), np.concatenate(windows)
            xyxy = xywh2xyxy(b[:, :4] * shift[:, :4]) + shift[:, 4:]  # as xywhn2xyxy(b, w, h) + shift
            visible = _clip_visible(xyxy.astype(np.float32), window.astype(np.float32), b[:, 4:5])
            boxes = filter_boxes(_affine_boxes(visible, matrix), s, s)
        boxes[:, :4] /= s  # albumentations' internal format: normalized x1, y1, x2, y2
        return {"mosaic": out, "mosaic_boxes": boxes, "mosaic_matrix": matrix}

    def _canvas(self, placed: list[tuple[np.ndarray, int, int]], x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The part `[x0, x1) x [y0, y1)` of the `2s x 2s` mosaic canvas (inside the canvas): the tiles
        `(image, left, top)` on the fill colour."""
        canvas = np.full((y1 - y0, x1 - x0, 3), self.fill, dtype=np.uint8)
        for img, left, top in placed:
            h, w = img.shape[:2]
            vx1, vy1, vx2, vy2 = max(left, x0), max(top, y0), min(left + w, x1), min(top + h, y1)
            if vx1 < vx2 and vy1 < vy2:
                canvas[vy1 - y0 : vy2 - y0, vx1 - x0 : vx2 - x0] = img[vy1 - top : vy2 - top, vx1 - left : vx2 - left]
        return canvas

    def _resized_window(self, placed: list[tuple[np.ndarray, int, int]], matrix: np.ndarray) -> tuple:
        """The output of an axis-aligned map `x' = a x + b` as one `cv2.resize` of the canvas window it
        sees (about 3x cheaper per output pixel than `cv2.warpAffine`, and only the window is built).

        The resized window lands on whole output pixels, so the offset `b` moves by under half an output
        pixel (the random translation, rounded); returns the image and the map it really applied, which the
        boxes then follow exactly."""
        s, a = self.size, float(matrix[0, 0])
        bx, by = float(matrix[0, 2]), float(matrix[1, 2])
        # canvas pixels the output sees, one pixel of margin for the interpolation, inside the canvas
        x0, y0 = max(math.floor(-bx / a) - 1, 0), max(math.floor(-by / a) - 1, 0)
        x1, y1 = min(math.ceil((s - bx) / a) + 2, 2 * s), min(math.ceil((s - by) / a) + 2, 2 * s)
        out = np.full((s, s, 3), self.fill, dtype=np.uint8)
        if x0 >= x1 or y0 >= y1:  # zoomed out so far that the output sees none of the canvas
            return out, matrix
        window = self._canvas(placed, x0, y0, x1, y1)
        h, w = window.shape[:2]
        if round(w * a) == 0 or round(h * a) == 0:  # the part of the canvas in view is under a pixel wide
            return out, matrix
        if round(w * a) == w and round(h * a) == h:
            a, resized = 1.0, window  # cv2.resize would copy the window as it is: the scale it applies is 1
        else:  # with fx/fy (no dsize) the scale applied is exactly `a`, output pixel u <- input (u + .5) / a - .5
            resized = cv2.resize(window, None, fx=a, fy=a, interpolation=cv2.INTER_LINEAR)
        ox, oy = round(a * x0 + bx), round(a * y0 + by)  # the window's corner on the output, whole pixels
        rh, rw = resized.shape[:2]
        u0, v0, u1, v1 = max(ox, 0), max(oy, 0), min(ox + rw, s), min(oy + rh, s)
        if u0 < u1 and v0 < v1:
            out[v0:v1, u0:u1] = resized[v0 - oy : v1 - oy, u0 - ox : u1 - ox]
        applied = np.array([[a, 0, ox - a * x0], [0, a, oy - a * y0], [0, 0, 1]], np.float64)
        return out, applied

    def _affine(self, uniform: Any) -> np.ndarray:
        """The 3x3 map from canvas to output pixels (YOLOv5's order: centre, rotate+scale, shear, translate)."""
        s = self.size
        centre = np.array([[1, 0, -s], [0, 1, -s], [0, 0, 1]], np.float64)  # canvas centre to the origin
        rotate = np.eye(3)
        rotate[:2] = cv2.getRotationMatrix2D((0, 0), uniform(-self.degrees, self.degrees),
                                             uniform(1 - self.scale, 1 + self.scale))  # fmt: skip
        shear = np.eye(3)
        shear[0, 1] = math.tan(math.radians(uniform(-self.shear, self.shear)))
        shear[1, 0] = math.tan(math.radians(uniform(-self.shear, self.shear)))
        move = np.eye(3)
        move[0, 2] = uniform(0.5 - self.translate, 0.5 + self.translate) * s
        move[1, 2] = uniform(0.5 - self.translate, 0.5 + self.translate) * s
        return move @ shear @ rotate @ centre

    def apply(self, img: np.ndarray, mosaic: np.ndarray, **params: Any) -> np.ndarray:
        return mosaic

    def apply_to_bboxes(self, bboxes: np.ndarray, mosaic_boxes: np.ndarray, **params: Any) -> np.ndarray:
        return mosaic_boxes  # the primary's boxes are inside; the class column is always kept

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "fill", "scale", "translate", "degrees", "shear")


def pixel_centre_map(matrix: np.ndarray) -> np.ndarray:
    """The 2x3 matrix for `cv2.warpAffine` of a 3x3 affine map in box coordinates.

    Boxes live in edge coordinates (pixel `i` spans `[i, i + 1)`), OpenCV's warp in centre coordinates
    (pixel `i` is the point `i`): `x_c = x_e - 1/2` on both sides, so the translation gains
    `A @ (1/2, 1/2) - 1/2`. Without it the image would sit `(1 - a) / 2` px away from its boxes at scale `a`
    (a quarter pixel at a = 0.5)."""
    m = np.array(matrix[:2], np.float64)
    m[:, 2] += m[:, :2].sum(1) * 0.5 - 0.5
    return m


def _albu_to_yolo(bboxes: np.ndarray) -> np.ndarray:
    """Albumentations' normalized x1y1x2y2 + class -> YOLO cx cy w h + class, `(n, 5)`."""
    b = np.asarray(bboxes, dtype=np.float32).reshape(-1, bboxes.shape[-1] if len(bboxes) else 5)
    return np.concatenate([xyxy2xywh(b), b[:, 4:5]], 1)


def _clip_visible(xyxy: np.ndarray, clip: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Clip pixel boxes `(n, 4)` to `clip` (x1, y1, x2, y2; one window, or one per box `(n, 4)`); keep those
    with >= MIN_VISIBILITY area left."""
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    c = np.clip(xyxy, clip[..., [0, 1, 0, 1]], clip[..., [2, 3, 2, 3]])
    kept = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    keep = (kept > 0) & (kept >= MIN_VISIBILITY * np.maximum(area, 1e-9))
    return np.concatenate([c[keep], cls[keep]], 1).astype(np.float32)


class BoxFollowingCompose:
    """The train pipeline's fast path: albumentations moves the pixels, the boxes follow the parameters.

    An `A.Compose` with a bbox processor converts, range-checks (`np.isclose` per coordinate) and filters
    the boxes on every call: ~0.25 ms per item at 320 px here, a quarter of the loader's whole per-image
    cost. This Compose runs the same transforms without it (`save_applied_params=True`) and then moves the
    boxes once, vectorised, by what each applied transform reports: `YoloMosaic` its boxes, `A.Affine` its
    `bbox_matrix` (box corners, as albumentations' "largest_box"), the flips a mirror. The final filter is
    `bbox_params()`'s rules (`filter_boxes`). Used only when every step is one of `FOLLOWED`; for the same
    seed it gives the same image and boxes as the albumentations path (tests/test_transforms.py).

    Call as a Compose: `pipeline(image=..., bboxes=YOLO rows (n, 5), mosaic_metadata=...)`.
    """

    FOLLOWED = ("YoloMosaic", "Affine", "HsvGain", "HorizontalFlip", "VerticalFlip")

    def __init__(self, steps: list[A.BasicTransform]) -> None:
        unknown = [type(t).__name__ for t in steps if type(t).__name__ not in self.FOLLOWED]
        if unknown:
            raise ValueError(
                f"BoxFollowingCompose cannot move boxes through {unknown}; use A.Compose with bbox_params()"
            )
        self.compose = A.Compose(steps, strict=False, save_applied_params=True)
        self.transforms = self.compose.transforms
        self._unused_generator = np.random.default_rng(0)

    def set_random_seed(self, seed: int) -> None:
        """The random state `A.Compose.set_random_seed(seed)` gives, at half its cost: every step its own
        `random.Random(seed)`, as there, but one numpy generator for all of them instead of a new
        `default_rng(seed)` each (~20 us apiece), because none of the `FOLLOWED` steps draws from it."""
        self.compose.py_random = random.Random(seed)
        for step in self.compose.transforms:
            step.set_random_state(self._unused_generator, random.Random(seed))

    def __call__(self, *, image: np.ndarray, bboxes: np.ndarray, **extra: Any) -> dict[str, Any]:
        rows = np.asarray(bboxes, dtype=np.float32).reshape(-1, 5)
        h, w = image.shape[:2]
        boxes = np.concatenate([np.clip(xywhn2xyxy(rows, w, h), 0, [w, h, w, h]), rows[:, 4:5]], 1)  # px
        if "mosaic_metadata" in extra:
            extra["mosaic_primary"] = rows
        res = self.compose(image=image, **extra)
        for name, params in res["applied_transforms"]:
            if name == "YoloMosaic":
                boxes = params["mosaic_boxes"] * np.array([*params["mosaic"].shape[1::-1]] * 2 + [1], np.float32)
            elif name == "Affine":
                boxes = _affine_boxes(boxes, params["bbox_matrix"])
            elif name in ("HorizontalFlip", "VerticalFlip"):
                size = params["shape"][1] if name == "HorizontalFlip" else params["shape"][0]
                i, j = (0, 2) if name == "HorizontalFlip" else (1, 3)
                boxes[:, [i, j]] = size - boxes[:, [j, i]]
        out_h, out_w = res["image"].shape[:2]
        kept = filter_boxes(boxes, out_w, out_h)
        xywhn = xyxy2xywh(kept) / np.array([out_w, out_h, out_w, out_h], np.float32)
        return {"image": res["image"], "bboxes": np.concatenate([xywhn, kept[:, 4:5]], 1).astype(np.float32)}


def _affine_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Pixel boxes `(n, 5)` through a 3x3 affine matrix: the axis-aligned hull of the moved corners."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x2, y2], 1), np.stack([x1, y2], 1)], 1)
    moved = corners @ matrix[:2, :2].T.astype(np.float32) + matrix[:2, 2].astype(np.float32)  # (n, 4, 2)
    return np.concatenate([moved.min(1), moved.max(1), boxes[:, 4:]], 1).astype(np.float32)


def filter_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """`bbox_params()`'s rules on pixel boxes `(n, 4+)` in a `width x height` image: clip to the image,
    drop boxes with under `MIN_VISIBILITY` of their area left, a side under `MIN_BOX_SIDE` px or an
    aspect ratio over `MAX_ASPECT`."""
    eps = 1e-7
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    c = boxes.copy()
    c[:, [0, 2]] = c[:, [0, 2]].clip(0, width)
    c[:, [1, 3]] = c[:, [1, 3]].clip(0, height)
    cw, ch = c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]
    keep = (
        (area >= eps)
        & (cw * ch / (area + eps) >= MIN_VISIBILITY)
        & (cw >= MIN_BOX_SIDE - eps)
        & (ch >= MIN_BOX_SIDE - eps)
        & (np.maximum(cw / (ch + eps), ch / (cw + eps)) <= MAX_ASPECT)
    )
    return c[keep]


def build_train_transform(
    imgsz: int,
    hyp: Mapping[str, Any] | None = None,
    mosaic: bool = False,
    backend: Literal["fast", "albumentations"] = "fast",
    user_transform: str | Path | None = None,
    crop: bool = True,
) -> A.Compose | BoxFollowingCompose:
    """The train pipeline at `imgsz x imgsz` (input: a letterboxed image, or the mosaic primary).

    Args:
        imgsz: output side (a multiple of 32).
        hyp: YOLOv5 augmentation names; missing keys take `DEFAULT_HYP`.
        mosaic: start with a 2x2 mosaic (needs `mosaic_metadata` in the call).
        backend: `"fast"` (YoloMosaic) or `"albumentations"` (A.Mosaic), see the module docstring.
        user_transform: an albumentations pipeline saved with `albumentations.save(..., data_format="yaml")`,
            inserted after the mosaic (or crop) step; accelyolo's box parameters apply to it.
        crop: allow the bbox-safe crop (hyp `crop` > 0) on non-mosaic samples; off for rect batches,
            whose shape is not square.
    """
    h = resolve_hyp(hyp)
    steps: list[A.BasicTransform] = []
    if crop and not mosaic and h["crop"] > 0:  # a crop that keeps every box (up to crop_erosion), resized back
        steps.append(A.RandomSizedBBoxSafeCrop(imgsz, imgsz, erosion_rate=h["crop_erosion"], p=h["crop"]))
    if mosaic:
        steps.append(_mosaic_step(imgsz, h, backend))
    if user_transform is not None:
        steps.extend(load_user_transform(user_transform))
    if not (mosaic and backend == "fast"):  # the fast mosaic's own warp is the affine step
        steps.append(_affine_step(h))
    if h["perspective"] > 0:  # YOLOv5 perspective is per pixel; map to a corner-offset fraction
        steps.append(A.Perspective(scale=(0.0, h["perspective"] * imgsz / 2), fill=PAD_VALUE, p=1.0))
    if h["hsv_h"] or h["hsv_s"] or h["hsv_v"]:
        steps.append(HsvGain(h["hsv_h"], h["hsv_s"], h["hsv_v"]))
    if h["fliplr"] > 0:
        steps.append(A.HorizontalFlip(p=h["fliplr"]))
    if h["flipud"] > 0:
        steps.append(A.VerticalFlip(p=h["flipud"]))
    if all(type(t).__name__ in BoxFollowingCompose.FOLLOWED for t in steps):
        return BoxFollowingCompose(steps)
    return A.Compose(steps, bbox_params=bbox_params(), strict=False)


def _mosaic_step(imgsz: int, h: Mapping[str, float], backend: str) -> A.BasicTransform:
    """The 2x2 mosaic: `YoloMosaic`, whose warp of the 2s canvas is YOLOv5's random_perspective (the affine
    step), or albumentations' `A.Mosaic` (followed by `A.Affine`)."""
    if backend == "albumentations":
        return A.Mosaic(
            grid_yx=(2, 2), target_size=(imgsz, imgsz), cell_shape=(imgsz, imgsz), fit_mode="contain",
            fill=PAD_VALUE, p=1.0,
        )  # fmt: skip
    return YoloMosaic(imgsz, fill=PAD_VALUE, **{key: h[key] for key in ("scale", "translate", "degrees", "shear")})


def _affine_step(h: Mapping[str, float]) -> A.Affine:
    """YOLOv5's random affine map from the hyp: one scale factor for both axes (no aspect distortion)."""
    return A.Affine(
        scale=(1 - h["scale"], 1 + h["scale"]),
        keep_ratio=True,
        translate_percent=(-h["translate"], h["translate"]),
        rotate=(-h["degrees"], h["degrees"]),
        shear=(-h["shear"], h["shear"]),
        fill=PAD_VALUE,
        p=1.0,
    )


def load_user_transform(path: str | Path) -> list[A.BasicTransform]:
    """The transforms of a pipeline saved by `albumentations.save(..., data_format="yaml")` (a Compose or
    a single transform). Its own bbox parameters, if any, are replaced by accelyolo's. A missing or unusable
    file is a `ConfigError` naming it and the `augment` option."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"'augment': the albumentations pipeline '{path}' does not exist")
    try:
        loaded = A.load(path, data_format="yaml")
    except Exception as exc:  # albumentations raises ValueError/KeyError/yaml errors for a bad file
        raise ConfigError(
            f"'augment': '{path}' is not an albumentations pipeline saved with "
            f"albumentations.save(pipeline, path, data_format='yaml'): {exc}"
        ) from exc
    if isinstance(loaded, A.BaseCompose):
        return list(loaded.transforms)
    if isinstance(loaded, A.BasicTransform):
        return [loaded]
    raise ConfigError(f"'augment': '{path}' holds a {type(loaded).__name__}, not an albumentations transform")


def bbox_params() -> A.BboxParams:
    """YOLO boxes with the class as extra column; the drop rules of the module docstring."""
    return A.BboxParams(
        format="yolo",
        min_visibility=MIN_VISIBILITY,
        min_width=MIN_BOX_SIDE,
        min_height=MIN_BOX_SIDE,
        max_accept_ratio=MAX_ASPECT,
        clip=True,
        filter_invalid_bboxes=True,
        check_each_transform=False,  # filter once at the end: ~0.5 ms less per item
    )


def mixup(a: dict[str, np.ndarray], b: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """YOLOv5 mixup: blend two same-size augmented samples with r ~ Beta(32, 32), keep all boxes."""
    r = rng.beta(32.0, 32.0)
    image = (a["image"].astype(np.float32) * r + b["image"].astype(np.float32) * (1 - r)).astype(np.uint8)
    return {"image": image, "bboxes": np.concatenate([a["bboxes"], b["bboxes"]])}
