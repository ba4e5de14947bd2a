"""`YoloDataset`: checked YOLO labels, image loading/caching and per-item augmentation.

Determinism: every random choice of `__getitem__` (mosaic or not, donors, albumentations
parameters, mixup) comes from `numpy.random.SeedSequence([seed, epoch, index])`, so an item
is the same in the main process and in any worker, before and after a resume. The epoch and the
mosaic switch live in a small shared-memory tensor, so `set_epoch` / `set_mosaic` called in the
main process reach (persistent) DataLoader workers at their next item.

An image that cannot be decoded any more (deleted or truncated after the label cache was built, as on
network filesystems) does not stop a run: the item is replaced by the next readable index, a warning
names the file once per process, and its flag in shared memory lets the trainer count it per epoch
(`unreadable_files()`), whichever worker met it.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from accelyolo.core.defaults import MAX_STRIDE
from accelyolo.core.errors import DataError
from accelyolo.data.cache import image_npy_path, save_npy
from accelyolo.data.checks import load_rgb
from accelyolo.data.pool import PoolSlots, shared_pool_slots
from accelyolo.data.sources import checked_entries
from accelyolo.data.transforms import build_train_transform, letterbox, load_user_transform, mixup, resolve_hyp

SINGLE_CLASS_NAMES = ("item",)  # the one class of a `single_cls` run
LOGGER = logging.getLogger(__name__)  # a child of "accelyolo"


def available_memory_mb() -> float:
    """Memory the system can still give (Linux `MemAvailable`; elsewhere the physical memory), in MB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20


class UnreadableImageError(OSError):
    """An image of the dataset that no longer decodes (its index, file and the decoder's error)."""

    def __init__(self, index: int, path: str, cause: BaseException) -> None:
        super().__init__(f"{path}: unreadable ({type(cause).__name__}: {cause})")
        self.index, self.path = index, path


class YoloDataset(torch.utils.data.Dataset):
    """A split of a YOLO dataset, letterboxed (val) or augmented (train).

    Args:
        images: image files of the split (`DataSpec.splits[...]`).
        imgsz: output side; a multiple of `stride`.
        augment: train pipeline (mosaic, affine, HSV, flips, mixup) instead of letterbox only.
        hyp: YOLOv5 augmentation names (`transforms.DEFAULT_HYP` for missing keys).
        names: the dataset's class names; `len(names)` is the class count for the class-id check
            (also with `single_cls`: a row of class >= nc is still a bad row).
        cache: None; "ram" to decode and resize the images once up front, as many as `cache_budget_mb`
            holds; "disk" to store each decoded image as a `.npy` file (beside the image, or in the
            fallback folder), reused across runs and rewritten when the image changes.
        rect: rectangular per-batch shapes (YOLOv5 rect batches); images are sorted by aspect.
        batch_size: batch size the rect shapes are computed for.
        stride: the model's largest stride; shapes are multiples of it.
        single_cls: every box is kept and becomes class 0; `names` becomes `["item"]`.
        seed: base seed of the augmentation randomness.
        cache_dir: where the label cache goes when the labels folder is read-only.
        cache_budget_mb: the most the RAM cache holds (MB); the images that do not fit are decoded when
            used (through the LRU buffer). None: half of the memory available now (`available_memory_mb`).
        buffer_mb: per-process LRU of decoded images (MB; 0 disables). Mosaic reads 4 images per
            item; the buffer makes repeated donors free without changing any pixel. When the decoded
            dataset does not fit in half of it, donors come from a pool per epoch (`donor_pool`) whose
            images are held once for all loader workers in shared memory, reserved here: pool size x
            imgsz^2 x 3 bytes, about 2/3 of `buffer_mb` (170 MB at the default 256), on top
            of each process' buffer (see `accelyolo.data.pool`).
        mosaic_backend: "fast" (numpy) or "albumentations" (`A.Mosaic`), see `transforms`.
        user_transform: an albumentations pipeline yaml inserted after the mosaic step (`augment: PATH`).
        verbose: log the split summary at INFO (DEBUG otherwise) to the `accelyolo` logger.
    """

    def __init__(
        self,
        images: Sequence[str | Path],
        imgsz: int = 640,
        augment: bool = False,
        hyp: Mapping[str, Any] | None = None,
        names: Sequence[str] | None = None,
        cache: Literal["ram", "disk"] | None = None,
        rect: bool = False,
        batch_size: int = 16,
        stride: int = MAX_STRIDE,
        single_cls: bool = False,
        seed: int = 0,
        *,
        cache_dir: str | Path | None = None,
        cache_budget_mb: float | None = None,
        buffer_mb: float = 256.0,
        mosaic_backend: Literal["fast", "albumentations"] = "fast",
        user_transform: str | Path | None = None,
        verbose: bool = False,
    ) -> None:
        if imgsz % stride:
            raise ValueError(f"imgsz={imgsz} must be a multiple of stride={stride} (e.g. 320, 640)")
        if cache not in (None, "ram", "disk"):
            raise ValueError(f"cache={cache!r}: expected None, 'ram' or 'disk'")
        if not images:
            raise DataError("YoloDataset got no images; check the split's folder or .txt list")
        if user_transform is not None:  # read once here: a bad file fails now, not at the first training batch
            load_user_transform(user_transform)
        self.imgsz, self.augment, self.rect, self.stride = imgsz, augment, rect, stride
        self.hyp = resolve_hyp(hyp)
        self.names = list(names) if names is not None else None
        self.seed = int(seed) % 2**63  # SeedSequence takes non-negative entropy
        self._read_labels(images, single_cls, Path(cache_dir) if cache_dir else None, verbose)
        self.batch_shapes: np.ndarray | None = None
        self.batch_index: np.ndarray | None = None
        if rect:
            self._make_rect_shapes(batch_size)
        # [epoch, mosaic on]: shared memory so the main process' setters reach the workers
        self._state = torch.tensor([0, 1], dtype=torch.int64).share_memory_()
        self._unreadable = torch.zeros(len(self.im_files), dtype=torch.bool).share_memory_()  # by index
        self.mosaic_backend = mosaic_backend
        self.user_transform = user_transform
        self._pipelines: dict[bool, Any] = {}
        self._init_image_store(buffer_mb)
        if cache == "ram":
            self._cache_ram(cache_budget_mb)
        elif cache == "disk":
            self._cache_disk(Path(cache_dir) if cache_dir else None)
        if augment and not rect and self.hyp["mosaic"] > 0 and self._pool_size() is not None:
            # here, before any DataLoader forks its workers, so that they all see the same slots
            self._pool_slots = shared_pool_slots(self._pool_size(), imgsz * imgsz * 3)

    def _read_labels(
        self, images: Sequence[str | Path], single_cls: bool, cache_dir: Path | None, verbose: bool
    ) -> None:
        """The checked label entries (from the label cache when it is current): files, shapes, boxes, crowd
        regions and the split's report; corrupt images left out (all corrupt: `DataError`)."""
        nc = len(self.names) if self.names else None
        entries, cache_file, hit = checked_entries(images, nc, cache_dir)
        self.report = build_report(entries, self.names, cache_file, hit, single_cls=single_cls)
        usable = [e for e in entries if e["status"] != "corrupt"]
        if not usable:
            raise DataError(
                f"no usable image among {len(entries)} (first: {entries[0]['file']}); "
                "run `accelyolo data check DATA_YAML` for the reason of each"
            )
        self.im_files = [e["file"] for e in usable]
        self.shapes = np.array([e["shape"] for e in usable], dtype=np.int64).reshape(-1, 2)  # (h0, w0)
        self.labels = [np.array(e["labels"], dtype=np.float32).reshape(-1, 5) for e in usable]
        # COCO `iscrowd: 1` regions by image file, `cls x1 y1 x2 y2` in original pixels: never trained on,
        # scored in validation as COCOeval scores them
        self.crowd = {e["file"]: _pixel_rows(e["crowd"], e["shape"]) for e in usable if e.get("crowd")}
        if single_cls:  # after the class check against the dataset's own classes
            for lb in (*self.labels, *self.crowd.values()):
                lb[:, 0] = 0
            self.names = list(SINGLE_CLASS_NAMES)
        r = self.report
        LOGGER.log(
            logging.INFO if verbose else logging.DEBUG,
            "%d images, %d backgrounds, %d boxes, %d corrupt, %d problems (label cache %s: %s)",
            len(self.im_files), r["backgrounds"], r["boxes"], r["corrupt"], len(r["problems"]),
            "hit" if hit else "built", cache_file,
        )  # fmt: skip

    def _init_image_store(self, buffer_mb: float) -> None:
        """Where decoded images live: the LRU buffer, the RAM / disk caches and the mosaic donor pool (empty)."""
        self._buffer: OrderedDict[int, np.ndarray] = OrderedDict()
        self._buffer_bytes, self.buffer_bytes_max = 0, int(buffer_mb * 2**20)
        self._ram: list[np.ndarray | None] | None = None  # --cache ram: the decoded images (None: over budget)
        self.cache_bytes = 0
        self._npy: list[Path] | None = None  # --cache disk: the .npy file of each image
        self._pool: tuple[int, np.ndarray | None] | None = None  # (epoch, donor indices)
        self._pool_slots: PoolSlots | None = None  # the pool's images, shared by the loader workers

    def __len__(self) -> int:
        return len(self.im_files)

    def crowd_regions(self, path: str) -> np.ndarray:
        """The crowd regions of image `path`: `(k, 5)` rows `cls x1 y1 x2 y2` in original pixels."""
        return self.crowd.get(str(path), np.zeros((0, 5)))

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation randomness of `epoch` (reaches workers at their next item)."""
        self._state[0] = int(epoch)

    def set_mosaic(self, enabled: bool) -> None:
        """Close mosaic (and mixup) with False; reaches workers from the loader's next iteration."""
        self._state[1] = int(bool(enabled))

    @property
    def mosaic_enabled(self) -> bool:
        return bool(self._state[1])

    @property
    def pool_slots(self) -> PoolSlots | None:
        """The donor pool's images shared by the loader workers; None without a pool (or without room in
        shared memory)."""
        return self._pool_slots

    def _make_rect_shapes(self, batch_size: int) -> None:
        """Sort by aspect ratio and give every batch the smallest stride-multiple shape (YOLOv5)."""
        ar = self.shapes[:, 0] / self.shapes[:, 1]  # h / w
        order = np.argsort(ar, kind="stable")
        self.im_files = [self.im_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.shapes, ar = self.shapes[order], ar[order]
        self.batch_index = np.arange(len(ar)) // batch_size
        shapes = []
        for b in range(int(self.batch_index[-1]) + 1):
            ari = ar[self.batch_index == b]
            lo, hi = ari.min(), ari.max()
            shapes.append([hi, 1.0] if hi < 1 else [1.0, 1.0 / lo] if lo > 1 else [1.0, 1.0])
        pad = 0.0 if self.augment else 0.5
        grid = np.ceil(np.array(shapes) * self.imgsz / self.stride + pad).astype(np.int64)
        self.batch_shapes = grid * self.stride  # (n_batches, 2) h, w

    def _cache_ram(self, budget_mb: float | None) -> None:
        """Decode and resize the images once, in order, as many as the byte budget holds; log what it takes.

        The size of each decoded image is known from the label cache's shapes, so the images that fit are
        chosen before any is decoded; the others stay `None` and are decoded when used."""
        budget = int((available_memory_mb() / 2 if budget_mb is None else budget_mb) * 2**20)
        r = self.imgsz / self.shapes.max(1)
        sizes = (np.round(self.shapes[:, 0] * r) * np.round(self.shapes[:, 1] * r) * 3).astype(np.int64)
        fits = int(np.searchsorted(np.cumsum(sizes), budget, side="right"))
        LOGGER.info(
            "caching %d of %d images in RAM: %.1f MB (budget %.1f MB)%s", fits, len(self),
            sizes[:fits].sum() / 2**20, budget / 2**20,
            "" if fits == len(self) else "; the others are decoded when used (raise cache_budget_mb to hold all)",
        )  # fmt: skip
        with ThreadPoolExecutor(4) as pool:
            self._ram = [*pool.map(self._decode, range(fits)), *[None] * (len(self) - fits)]
        self.cache_bytes = sum(img.nbytes for img in self._ram[:fits])

    def _cache_disk(self, fallback_dir: Path | None) -> None:
        """Write the `.npy` of every image that has none yet (no pickle: `allow_pickle=False`)."""
        self._npy = [image_npy_path(Path(f), self.imgsz, self.augment, fallback_dir) for f in self.im_files]
        missing = [i for i, p in enumerate(self._npy) if not p.is_file()]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: save_npy(self._npy[i], self._decode(i)), missing))
        LOGGER.info(
            "disk cache: %d images decoded to .npy, %d reused (%s)", len(missing), len(self) - len(missing),
            self._npy[0].parent,
        )  # fmt: skip

    def _decode(self, i: int) -> np.ndarray:
        try:
            if self._npy is not None and self._npy[i].is_file():
                return np.load(self._npy[i], allow_pickle=False)
            return load_rgb(self.im_files[i], self.imgsz, fast=self.augment)
        except Exception as err:  # decoders raise OSError, SyntaxError, struct.error... for a damaged file
            raise UnreadableImageError(i, self.im_files[i], err) from err

    def unreadable_files(self) -> list[str]:
        """Images that failed to decode so far in any process of this dataset (sorted by index)."""
        return [self.im_files[i] for i in torch.nonzero(self._unreadable).flatten().tolist()]

    def load_image(self, i: int) -> np.ndarray:
        """Image `i` as RGB uint8, long side resized to `imgsz` (RAM cache / LRU buffer / shared donor pool /
        disk).

        While mosaic is on, an image of the epoch's donor pool that this process has not buffered is copied
        from its shared slot, where the first process that needed it in this epoch put it: the loader
        workers together decode each pool image about once per epoch instead of once each. The buffer keeps
        what it kept before, so a process never decodes more than it did without the slots."""
        if self._ram is not None and self._ram[i] is not None:
            return self._ram[i]
        slot = self._pool_slot(i)
        img = self._buffer.get(i)
        if img is not None:
            self._buffer.move_to_end(i)
        elif slot is not None and (shared := self._pool_slots.get(*slot)) is not None:
            img = self._buffered(i, shared.copy())  # a copy: the slot holds another image next epoch
        else:
            img = self._buffered(i, self._decode(i))
        if slot is not None:
            self._pool_slots.put(*slot, img)  # nothing to do when the slot already holds this epoch
        return img

    def _pool_slot(self, i: int) -> tuple[int, int] | None:
        """`(slot, epoch)` of image `i` in the current epoch's shared donor pool; None when it is not in it,
        there is no shared pool, or mosaic is off (no donors drawn)."""
        if self._pool_slots is None or not self.mosaic_enabled:
            return None
        epoch = int(self._state[0])  # read once: the slot is filled and marked for this epoch's pool
        pool = self.donor_pool(epoch)
        k = int(np.searchsorted(pool, i))
        return (k, epoch) if k < len(pool) and pool[k] == i else None

    def _buffered(self, i: int, img: np.ndarray) -> np.ndarray:
        """`img` (image `i`) after putting it in this process' LRU buffer (when it fits)."""
        if img.nbytes <= self.buffer_bytes_max:
            self._buffer[i] = img
            self._buffer_bytes += img.nbytes
            while self._buffer_bytes > self.buffer_bytes_max:
                self._buffer_bytes -= self._buffer.popitem(last=False)[1].nbytes
        return img

    def _pool_size(self) -> int | None:
        """Size of the donor pool; None when donors come from the whole dataset (it is in RAM, or its
        decoded images fit in half the LRU buffer, or there is no buffer)."""
        per_image = self.imgsz * self.imgsz * 9 // 4  # bytes of a decoded 4:3 image
        size = max(16, self.buffer_bytes_max // 2 // per_image)
        if self._ram is not None and self._ram[-1] is not None:  # the whole dataset is in RAM
            return None
        if self.buffer_bytes_max == 0 or len(self) <= size:
            return None
        return size

    def donor_pool(self, epoch: int) -> np.ndarray | None:
        """Indices the mosaic donors of `epoch` are drawn from; None means the whole dataset.

        When the decoded dataset does not fit in half the LRU buffer, donors come from a pool of
        images chosen per (seed, epoch) that does, so an item costs about one decode instead
        of four (the role of ultralytics' recent-image buffer, but deterministic). Every image
        is still a primary once per epoch, and the pool changes every epoch. The pool's images are
        held in shared memory (`accelyolo.data.pool`), so that all loader workers together decode
        each about once per epoch.
        """
        size = self._pool_size()
        if size is None:
            return None
        if self._pool is None or self._pool[0] != epoch:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0, 1]))  # not an item stream
            self._pool = (epoch, np.sort(rng.choice(len(self), size, replace=False)))
        return self._pool[1]

    def _yolo_rows(self, i: int) -> np.ndarray:
        """Labels of image `i` as albumentations YOLO rows `(n, 5)`: cx, cy, w, h, class."""
        lb = self.labels[i]
        return np.concatenate([lb[:, 1:5], lb[:, :1]], 1)

    def _target_shape(self, i: int) -> tuple[int, int]:
        if self.batch_shapes is not None:
            return tuple(int(v) for v in self.batch_shapes[self.batch_index[i]])
        return (self.imgsz, self.imgsz)

    def _letterboxed(self, i: int, shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Letterbox image `i` to `shape` (default: its own target shape); boxes re-normalized to the padded
        image."""
        img = self.load_image(i)
        h0, w0 = (int(v) for v in self.shapes[i])
        out, (ry, rx), (left, top) = letterbox(img, shape or self._target_shape(i), scaleup=self.augment)
        nh, nw = round(ry * img.shape[0]), round(rx * img.shape[1])  # image inside the padding
        rows = self._yolo_rows(i).copy()
        H, W = out.shape[:2]
        rows[:, [0, 2]] = (rows[:, [0, 2]] * nw + np.array([left, 0])) / W
        rows[:, [1, 3]] = (rows[:, [1, 3]] * nh + np.array([top, 0])) / H
        ratio_pad = ((nh / h0, nw / w0), (left, top))
        return out, rows, ratio_pad

    def _pipeline(self, mosaic: bool):
        if mosaic not in self._pipelines:  # built lazily, per process
            self._pipelines[mosaic] = build_train_transform(
                self.imgsz,
                self.hyp,
                mosaic=mosaic,
                backend=self.mosaic_backend,
                user_transform=self.user_transform,
                crop=not self.rect,
            )
        return self._pipelines[mosaic]

    def _augmented(
        self, i: int, rng: np.random.Generator, use_mosaic: bool, shape: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """One pass of the train pipeline for image `i`, randomness drawn from `rng`."""
        extra: dict[str, Any] = {}
        if use_mosaic:
            img, rows = self.load_image(i), self._yolo_rows(i)
            pool = self.donor_pool(int(self._state[0]))
            donors = rng.integers(0, len(self), 3) if pool is None else pool[rng.integers(0, len(pool), 3)]
            extra["mosaic_metadata"] = [
                {"image": self.load_image(int(j)), "bboxes": self._yolo_rows(int(j))} for j in donors
            ]
        else:
            img, rows, _ = self._letterboxed(i, shape)
        pipeline = self._pipeline(use_mosaic)
        pipeline.set_random_seed(int(rng.integers(2**31 - 1)))
        res = pipeline(image=img, bboxes=rows, **extra)
        boxes = np.asarray(res["bboxes"], dtype=np.float32).reshape(-1, rows.shape[1])
        return {"image": res["image"], "bboxes": boxes}

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Item `i`; when an image it needs no longer decodes, the item of the next index instead (at the
        shape of item `i`, so that a rectangular batch still stacks)."""
        shape = self._target_shape(int(i))
        for k in range(len(self)):
            try:
                return self._item((int(i) + k) % len(self), shape)
            except UnreadableImageError as err:
                if not self._unreadable[err.index]:
                    self._unreadable[err.index] = True
                    LOGGER.warning("%s; replaced by another sample (training goes on)", err)
        raise RuntimeError(f"no image of this dataset can be read any more (first: {self.im_files[0]})")

    def _item(self, i: int, shape: tuple[int, int]) -> dict[str, Any]:
        epoch, mosaic_on = int(self._state[0]), bool(self._state[1])
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, int(i)]))
        h0, w0 = (int(v) for v in self.shapes[i])
        if self.augment:
            use_mosaic = mosaic_on and not self.rect and rng.random() < self.hyp["mosaic"]
            sample = self._augmented(i, rng, use_mosaic, shape)
            if use_mosaic and self.hyp["mixup"] > 0 and rng.random() < self.hyp["mixup"]:
                other = self._augmented(int(rng.integers(len(self))), rng, True)
                sample = mixup(sample, other, rng)
            r = self.imgsz / max(h0, w0)
            ratio_pad = ((r, r), (0, 0))  # nominal: the geometry is random after augmentation
            image, rows = sample["image"], sample["bboxes"]
        else:
            image, rows, ratio_pad = self._letterboxed(i, shape)
        return {
            "image": np.ascontiguousarray(image),
            "boxes": rows[:, :4].astype(np.float32),
            "classes": rows[:, 4].astype(np.int64),
            "path": self.im_files[i],
            "orig_shape": (h0, w0),
            "ratio_pad": ratio_pad,
        }


def validation_split(
    images: Sequence[str | Path],
    imgsz: int,
    names: Sequence[str],
    rect: bool,
    batch_size: int,
    single_cls: bool = False,
    **options: Any,
) -> YoloDataset:
    """A split as validation scores it, in training and in `accelyolo val` alike: letterboxed to `imgsz`,
    never augmented, with rectangular batches of `batch_size` when `rect`, shapes multiples of the largest
    stride. `names` are the dataset's classes (the class check); `options` are `YoloDataset`'s keywords
    (cache, seed, ...)."""
    return YoloDataset(
        images, imgsz=imgsz, augment=False, hyp=None, names=list(names), rect=rect, batch_size=batch_size,
        stride=MAX_STRIDE, single_cls=single_cls, **options,
    )  # fmt: skip


def _pixel_rows(rows: list[list[float]], shape: Sequence[int]) -> np.ndarray:
    """Normalized `cls cx cy w h` rows -> `cls x1 y1 x2 y2` in the pixels of an image of `shape` (h, w)."""
    r = np.array(rows, np.float64).reshape(-1, 5)
    h, w = (float(v) for v in shape)
    cx, cy, bw, bh = r[:, 1] * w, r[:, 2] * h, r[:, 3] * w, r[:, 4] * h
    return np.stack([r[:, 0], cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)


def build_report(
    entries: list[dict[str, Any]],
    names: Sequence[str] | None,
    cache_file: Path | None = None,
    cache_hit: bool = False,
    single_cls: bool = False,
) -> dict[str, Any]:
    """Counts and problems of a split from its checked entries (JSON-ready); with `single_cls` every box
    counts for the one class `item`.

    Keys: `images` (usable), `backgrounds`, `boxes`, `corrupt`, `missing_labels`,
    `empty_labels`, `duplicates_removed`, `rows_dropped` (of which `class_out_of_range`),
    `rows_clipped`, `crowd_regions` (COCO `iscrowd: 1`, not trained on), `boxes_per_class` (name -> count),
    `problems` (list of `{file, line, problem}`, line None for a whole file; from a COCO file also
    `annotation`, the annotation id), `cache_file`, `cache_hit`.
    """
    usable = [e for e in entries if e["status"] != "corrupt"]
    counts: dict[int, int] = {}
    for e in usable:
        for row in e["labels"]:
            cls = 0 if single_cls else int(row[0])
            counts[cls] = counts.get(cls, 0) + 1
    if single_cls:
        names = SINGLE_CLASS_NAMES
    label = (lambda c: names[c] if c < len(names) else str(c)) if names else str
    return {
        "images": len(usable),
        "backgrounds": sum(e["status"] == "background" for e in usable),
        "boxes": sum(counts.values()),
        "corrupt": len(entries) - len(usable),
        "missing_labels": sum(bool(e["missing"]) for e in entries),
        "empty_labels": sum(bool(e["empty"]) for e in entries),
        "duplicates_removed": sum(int(e["duplicates"]) for e in entries),
        "rows_dropped": sum(int(e["rows_dropped"]) for e in entries),
        "class_out_of_range": sum(int(e["class_out_of_range"]) for e in entries),
        "rows_clipped": sum(int(e["rows_clipped"]) for e in entries),
        "crowd_regions": sum(len(e.get("crowd", ())) for e in usable),
        "boxes_per_class": {label(c): counts[c] for c in sorted(counts)},
        "problems": [dict(p) for e in entries for p in e["problems"]],
        "cache_file": str(cache_file) if cache_file else None,
        "cache_hit": cache_hit,
    }


def report_summary(split: str, report: dict[str, Any]) -> str:
    """One line of a split's counts for the training log, e.g.
    `data train: 120 images found, 2 corrupt skipped, 3 labels missing, 1 empty label, 4 rows dropped
    (1 class >= nc), 2 clipped, 1 duplicate removed; 830 boxes`."""
    found = report["images"] + report["corrupt"]
    return (
        f"data {split}: {found} images found, {report['corrupt']} corrupt skipped, "
        f"{report['missing_labels']} label{'s' * (report['missing_labels'] != 1)} missing, "
        f"{report['empty_labels']} empty label{'s' * (report['empty_labels'] != 1)}, "
        f"{report['rows_dropped']} rows dropped ({report['class_out_of_range']} class >= nc), "
        f"{report['rows_clipped']} clipped, {report['duplicates_removed']} duplicate"
        f"{'s' * (report['duplicates_removed'] != 1)} removed; {report['boxes']} boxes"
    )
