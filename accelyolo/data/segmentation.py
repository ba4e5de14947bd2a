"""Semantic segmentation data: the `seg_*` keys of data.yaml, mask checks, the albumentations
pipeline and the dataset that feeds a multi-task model's segmentation head.

```yaml
seg_train: seg/images/train    # folder(s) or .txt list(s) of images, as `train:`
seg_val: seg/images/val
seg_names: [road, car, ...]     # or {0: road, ...}; K = the number of names
seg_ignore: 255                 # mask value that is no class (default 255): not trained, not scored
```
Each image's mask is found by swapping the last `images` folder of its path for `masks` and the
suffix for `.png` (`seg/images/train/a.jpg` -> `seg/masks/train/a.png`): a single-channel PNG of class
ids. The segmentation images may be the detection images or another set. A mask that is missing,
not single-channel, of another size than its image, or holding an id >= K that is not `seg_ignore`
is reported with its file and skipped.

Train pipeline (one `A.Compose`, the mask goes through the same call as its image, nearest
interpolation, padding = `seg_ignore` in the mask and grey 114 in the image): longest side to imgsz,
random scale `1 ± seg_scale`, random crop (padded when smaller) to `seg_shape` = (short, imgsz) with
short = imgsz · seg_aspect rounded up to a multiple of 32 (the seed's crop: long side as detection,
short side halved), HSV gains, horizontal flip. Validation: longest side to imgsz, padded to
imgsz x imgsz (padding ignored by the metrics). Every random choice = f(seed, epoch, index).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from accelyolo.core.defaults import MAX_STRIDE
from accelyolo.core.errors import DataError
from accelyolo.data.spec import DataConfigError, _names, _root, _split_images
from accelyolo.data.transforms import PAD_VALUE, HsvGain, resolve_hyp

__all__ = [
    "SegmentationDataset",
    "SegSpec",
    "build_seg_dataloader",
    "build_seg_transform",
    "check_mask",
    "check_masks",
    "load_seg_spec",
    "mask_path",
    "seg_collate_fn",
    "seg_shape",
]

LOGGER = logging.getLogger("accelyolo")
DEFAULT_IGNORE = 255


@dataclass
class SegSpec:
    """The segmentation part of a data.yaml: image lists per split, class names, ignore value."""

    yaml_path: Path
    names: list[str]
    ignore: int = DEFAULT_IGNORE
    splits: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.names)


def load_seg_spec(path: str | Path) -> SegSpec | None:
    """The `seg_*` keys of a data.yaml, or None when it has no `seg_train` (or is a COCO `.json` or a
    Hugging Face dataset folder given as the data, which name no segmentation split)."""
    yaml_path = Path(path).expanduser().resolve()
    if yaml_path.is_dir() or yaml_path.suffix.lower() == ".json":
        return None
    try:
        cfg = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise DataConfigError(f"{yaml_path}: cannot read the data.yaml ({err})") from err
    if not isinstance(cfg, dict) or cfg.get("seg_train") is None:
        return None
    if cfg.get("seg_val") is None:
        raise DataConfigError(
            f"{yaml_path}: 'seg_train' is set but 'seg_val' is missing; add `seg_val:` (folder or .txt)"
        )
    if cfg.get("seg_names") is None:
        raise DataConfigError(
            f"{yaml_path}: 'seg_train' is set but 'seg_names' is missing; list the segmentation classes"
        )
    ignore = cfg.get("seg_ignore", DEFAULT_IGNORE)
    if not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore <= 65535:
        raise DataConfigError(f"{yaml_path}: key 'seg_ignore' must be an integer mask value 0..65535, got {ignore!r}")
    names = _names({"names": cfg["seg_names"]}, yaml_path)
    if len(names) < 2:
        raise DataConfigError(f"{yaml_path}: key 'seg_names' needs at least 2 classes (e.g. background and one more)")
    if ignore < len(names):
        raise DataConfigError(f"{yaml_path}: key 'seg_ignore' = {ignore} is a class id (seg_names has {len(names)})")
    root = _root(cfg, yaml_path)
    splits = {key: _split_images(cfg[key], root, yaml_path, key) for key in ("seg_train", "seg_val")}
    for key, files in splits.items():
        if not files:
            raise DataConfigError(f"{yaml_path}: key '{key}' lists no images")
    return SegSpec(yaml_path=yaml_path, names=names, ignore=ignore, splits=splits)


def mask_path(image: str | Path) -> Path:
    """`.../images/<rest>/x.jpg` -> `.../masks/<rest>/x.png` (the last `images` folder of the path)."""
    parts = list(Path(image).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "masks"
            return Path(*parts).with_suffix(".png")
    raise DataConfigError(f"{image}: a segmentation image must lie under an 'images' folder (masks under 'masks')")


def check_mask(image: Path, num_classes: int, ignore: int) -> tuple[str, str] | None:
    """`(file, problem)` when the mask of `image` cannot be used, None when it is good."""
    mask_file = mask_path(image)
    if not mask_file.is_file():
        return str(mask_file), f"mask missing (for image {image})"
    try:
        with Image.open(image) as im:
            width, height = im.size
    except OSError as err:
        return str(image), f"unreadable image ({err})"
    mask = cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED)
    if mask is None:
        return str(mask_file), "unreadable mask"
    if mask.ndim != 2:
        return str(mask_file), f"mask must be single-channel class ids, got shape {mask.shape}"
    if mask.shape != (height, width):
        return str(mask_file), f"mask size {mask.shape[1]}x{mask.shape[0]} differs from its image {width}x{height}"
    ids = np.unique(mask)
    bad = ids[(ids >= num_classes) & (ids != ignore)]
    if len(bad):
        return str(mask_file), (
            f"class ids {bad.tolist()[:5]} >= {num_classes} (seg_names) and not the ignore value {ignore}"
        )
    return None


def check_masks(images: list[Path], num_classes: int, ignore: int) -> tuple[list[Path], list[dict[str, str]]]:
    """The images whose masks are usable, and `{"file", "problem"}` for every other one."""
    good, problems = [], []
    for image in images:
        problem = check_mask(Path(image), num_classes, ignore)
        if problem is None:
            good.append(Path(image))
        else:
            problems.append({"file": problem[0], "problem": problem[1]})
    return good, problems


def seg_shape(imgsz: int, aspect: float) -> tuple[int, int]:
    """(height, width) of a training crop: width imgsz, height imgsz·aspect rounded up to a multiple of 32."""
    return max(MAX_STRIDE, math.ceil(imgsz * aspect / MAX_STRIDE) * MAX_STRIDE), imgsz


def build_seg_transform(
    imgsz: int, shape: tuple[int, int] | None, ignore: int, hyp: Mapping[str, Any] | None = None, scale: float = 0.5
) -> A.Compose:
    """The train pipeline (random crop to `shape`) or, with `shape=None`, the val pipeline (see module docstring)."""
    steps: list[A.BasicTransform] = [A.LongestMaxSize(max_size=imgsz)]
    if shape is None:
        steps.append(A.PadIfNeeded(imgsz, imgsz, border_mode=cv2.BORDER_CONSTANT, fill=PAD_VALUE, fill_mask=ignore))
        return A.Compose(steps)
    h = resolve_hyp(hyp)
    if scale > 0:
        steps.append(A.RandomScale(scale_limit=(-scale, scale), p=1.0))
    steps.append(
        A.RandomCrop(
            shape[0],
            shape[1],
            pad_if_needed=True,
            pad_position="random",
            border_mode=cv2.BORDER_CONSTANT,
            fill=PAD_VALUE,
            fill_mask=ignore,
        )
    )
    if h["hsv_h"] or h["hsv_s"] or h["hsv_v"]:
        steps.append(HsvGain(h["hsv_h"], h["hsv_s"], h["hsv_v"]))
    if h["fliplr"] > 0:
        steps.append(A.HorizontalFlip(p=h["fliplr"]))
    return A.Compose(steps)


class SegmentationDataset(Dataset):
    """Images and class-id masks for the segmentation head; bad masks reported and skipped.

    Args:
        images: image files (masks by `mask_path`).
        names: segmentation class names (K = len(names)).
        imgsz: long side.
        augment: the train pipeline (random crop to `shape`) or the val pipeline (imgsz x imgsz).
        ignore: mask value that is no class.
        hyp: HSV and flip gains (YOLOv5 names).
        aspect: crop height / width when augmenting.
        scale: random scale range `1 ± scale` when augmenting.
        seed: base seed; item randomness = f(seed, epoch, index).
    """

    def __init__(
        self,
        images: list[Path],
        names: list[str],
        imgsz: int,
        augment: bool,
        ignore: int = DEFAULT_IGNORE,
        hyp: Mapping[str, Any] | None = None,
        aspect: float = 0.5,
        scale: float = 0.5,
        seed: int = 0,
    ) -> None:
        if not images:
            raise ValueError("SegmentationDataset got no images; check seg_train / seg_val in the data.yaml")
        self.names, self.ignore, self.imgsz, self.augment = list(names), int(ignore), int(imgsz), augment
        self.seed = int(seed) % 2**63
        good, problems = check_masks(images, len(self.names), self.ignore)
        self.problems = [f"{p['file']}: {p['problem']}" for p in problems]  # each names its file
        for problem in self.problems:
            LOGGER.warning("segmentation: skipped %s", problem)
        if not good:
            raise DataError(
                f"no usable segmentation image among {len(images)}: {self.problems[0]}; "
                "`accelyolo data check DATA_YAML` lists every problem"
            )
        self.files = good
        self.shape = seg_shape(imgsz, aspect) if augment else (imgsz, imgsz)
        self.transform = build_seg_transform(imgsz, self.shape if augment else None, self.ignore, hyp, scale)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()  # reaches the loader's workers

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = int(epoch)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = cv2.cvtColor(cv2.imread(str(self.files[i]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(str(mask_path(self.files[i])), cv2.IMREAD_UNCHANGED)
        if self.augment:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(self._epoch[0]), int(i), 7]))
            self.transform.set_random_seed(int(rng.integers(2**31 - 1)))
        out = self.transform(image=image, mask=mask)
        return {
            "image": np.ascontiguousarray(out["image"]),
            "mask": out["mask"].astype(np.int64),
            "path": self.files[i],
        }


def seg_collate_fn(items: list[dict[str, Any]]) -> dict[str, Any]:
    """`images` uint8 (B, 3, H, W), `masks` int64 (B, H, W), `paths`."""
    images = torch.from_numpy(np.stack([it["image"] for it in items])).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.stack([it["mask"] for it in items]))
    return {"images": images, "masks": masks, "paths": [it["path"] for it in items]}


def build_seg_dataloader(
    dataset: SegmentationDataset, batch_size: int, workers: int, shuffle: bool, seed: int = 0
) -> DataLoader:
    """A DataLoader with seeded shuffling (Accelerate re-wraps the sampler for DDP and sets its epoch)."""
    generator = torch.Generator().manual_seed(int(seed) + 2)
    sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=seg_collate_fn,
        persistent_workers=workers > 0,
        drop_last=False,
    )
