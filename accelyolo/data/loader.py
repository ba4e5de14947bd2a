"""Collate and DataLoader construction for `YoloDataset`.

Evaluation under DDP: `build_dataloader(..., num_shards=N, shard=rank)` gives each rank whole batches of
the sequential order (batch k goes to rank k mod N), no index repeated and no batch padded. Accelerate's
sharding would complete a short last batch with images of the first batches, which in rectangular
batches have another shape and cannot be stacked; such a loader is therefore not passed to `prepare()`.

Seeding: shuffling uses a plain `RandomSampler` with a `torch.Generator` seeded from `seed`
(Accelerate's `prepare()` re-wraps it for DDP and calls `set_epoch`); the item randomness itself
comes from `(seed, epoch, index)` inside the dataset, so worker count and order do not matter.

YOLOv5's `--quad` collate (groups of 4 images turned into one 2x image, the batch divided by 4) is not
offered: it changes how many images a step sees, which the nominal-batch accumulation and the weight-decay
scaling (`optim`) derive from `batch_size`, and YOLOv5 describes it as useful only for training at a larger
`--img` than the test size; a correct version would need those rules re-derived, not only a collate.
"""

from __future__ import annotations

import functools
import math
import random
import weakref
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler, SequentialSampler

from accelyolo.data.dataset import YoloDataset


def to_model_input(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 `(B, 3, H, W)` images -> float `[0, 1]`, NHWC in memory when `channels_last` (the one place
    the trainer, the evaluator and predict turn a batch into model input).

    A collated batch is already NHWC in memory (`collate_fn`): the float conversion keeps that layout, so
    with `channels_last` no copy is made beyond the conversion itself."""
    images = images.float() / 255.0  # keeps the input's memory layout
    return images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def collate_fn(items: list[dict[str, Any]], images_out: torch.Tensor | None = None) -> dict[str, Any]:
    """Stack items into a batch.

    Args:
        items: dataset items (`image` HWC arrays of one shape and dtype, `boxes`, `classes`, ...).
        images_out: an NHWC tensor `(B, H, W, 3)` of the images' dtype to stack the pixels into (a reused
            shared-memory buffer, `BatchCollate`); a new one by default.

    Returns:
        `images` `(B, 3, H, W)` of the items' dtype (uint8), NHWC in memory (channels-last strides: one copy
        of the pixels, and the model input of a channels-last model needs no other); `targets` float32
        `(N, 6)` = image index, class, cx, cy, w, h (normalized to the letterboxed image); `paths`,
        `orig_shapes`, `ratio_pads` lists.
    """
    first = items[0]["image"]
    if images_out is None:
        images_out = torch.from_numpy(np.empty((len(items), *first.shape), first.dtype))
    np.stack([it["image"] for it in items], out=images_out.numpy())
    rows = []
    for b, it in enumerate(items):
        n = len(it["classes"])
        t = np.empty((n, 6), dtype=np.float32)
        t[:, 0], t[:, 1], t[:, 2:] = b, it["classes"], it["boxes"]
        rows.append(t)
    targets = torch.from_numpy(np.concatenate(rows) if rows else np.zeros((0, 6), np.float32))
    return {
        "images": images_out.permute(0, 3, 1, 2),  # (B, 3, H, W) view
        "targets": targets,
        "paths": [it["path"] for it in items],
        "orig_shapes": [it["orig_shape"] for it in items],
        "ratio_pads": [it["ratio_pad"] for it in items],
    }


class BatchCollate:
    """`collate_fn` for loader workers that reuses the shared memory the images travel in.

    A worker's batch goes to the main process in shared memory. A new segment per batch costs its
    allocation, a page fault per 4 KiB on the way in and its release on the way out: measured ~370 us per
    320 px image here, about a third of the whole per-image cost of the training loader. Each worker
    therefore keeps `slots` segments and stacks a batch into a free one. A slot is free again when the
    main process no longer holds the batch's pixels: the batch arrives there as a plain dict whose images'
    storage carries a finalizer (`weakref.finalize` on the storage, which fires only when the storage itself
    is gone: views, `.numpy()` arrays and the storage object all keep it), and that finalizer marks the slot
    free in a small shared table. When every slot is busy (a consumer holding many batches), the worker
    allocates a new segment as before; nothing waits. Items in the main process (0 workers) are collated
    by `collate_fn` unchanged.
    """

    def __init__(self, workers: int, slots: int = 3) -> None:
        self.workers, self.slots = int(workers), int(slots)
        self.in_use = torch.zeros(max(self.workers, 1) * self.slots, dtype=torch.uint8).share_memory_()
        self._buffers: dict[int, torch.UntypedStorage] = {}  # this worker's segments, by slot

    def __getstate__(self) -> dict[str, Any]:  # a spawned worker starts with no segments of its own
        return {**self.__dict__, "_buffers": {}}

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        info = torch.utils.data.get_worker_info()
        if info is None or info.id >= self.workers:
            return collate_fn(items)
        first = items[0]["image"]
        shape, dtype = (len(items), *first.shape), torch.from_numpy(first[:0]).dtype
        nbytes = math.prod(shape) * first.itemsize
        flags = self.in_use.numpy()
        slot = next((k for k in range(info.id * self.slots, (info.id + 1) * self.slots) if not flags[k]), None)
        if slot is None:  # all busy: a segment of its own, as torch's default_collate allocates it
            storage = torch.UntypedStorage._new_shared(nbytes)
        else:
            storage = self._buffers.get(slot)
            if storage is None or storage.nbytes() < nbytes:  # first use, or a larger batch shape
                storage = self._buffers[slot] = torch.UntypedStorage._new_shared(nbytes)
            flags[slot] = 1
        batch = collate_fn(items, torch.empty(0, dtype=dtype).set_(storage, 0, shape))
        return batch if slot is None else _LeasedBatch(batch, self.in_use, slot)


class _LeasedBatch(dict):
    """A worker's batch in a reused segment: unpickled in the main process as a plain dict whose images'
    storage frees the slot when it is gone."""

    def __init__(self, batch: dict[str, Any], in_use: torch.Tensor, slot: int) -> None:
        super().__init__(batch)
        self.in_use, self.slot = in_use, slot

    def __reduce__(self):
        return _received, (dict(self), self.in_use, self.slot)


def _received(batch: dict[str, Any], in_use: torch.Tensor, slot: int) -> dict[str, Any]:
    weakref.finalize(batch["images"].untyped_storage(), _release, in_use, slot)
    return batch


def _release(in_use: torch.Tensor, slot: int) -> None:
    in_use[slot] = 0


def sequential_opencv_in_workers(workers: int) -> None:
    """With loader workers, OpenCV runs sequentially (`cv2.setNumThreads(1)`), set in this process before
    the workers fork so that they inherit it: the workers are the parallelism. Left at OpenCV's default,
    each worker runs a pool of one thread per core (16 workers on a 16-core machine: 256 threads). On the
    one GPU machine measured (H200, 16 cores, 640 px) the loader's throughput was the same either way
    (566 and 504 images/s, within the run-to-run spread); the setting stays because it cannot oversubscribe.
    Not in the worker itself: `cv2.setNumThreads` in a forked worker whose parent had already used
    OpenCV's thread pool deadlocks (seen with 2 workers after a 0-worker pass). Without workers the
    loader runs in this process, and OpenCV keeps its threads."""
    if workers > 0:
        import cv2

        cv2.setNumThreads(1)


def start_next_pass(loader: Any) -> bool:
    """Start the next pass over a prepared training loader now, instead of at its next `iter()`.

    Persistent workers idle from the moment they hand out an epoch's last batch until the next epoch's
    `iter()`, and that epoch then begins by waiting for its first batches, each built whole by one worker.
    On a small dataset (a few dozen batches an epoch) that wait is a large part of the epoch: on an H200
    with 16 workers at 640 px, coco128 x12 (24 batches of 64), half of our training time was spent waiting
    while ultralytics' loader, which never stops between epochs, had the batches ready.

    Call it once the epoch's last batch has arrived and the dataset and sampler are set to the next epoch:
    the workers then build the next epoch's first `prefetch_factor x workers` batches while the last step,
    validation and the checkpoint run, and the next `iter(loader)` returns that pass instead of starting
    another (which would drop the prepared batches). The items are the same as without it: they are a
    function of (seed, epoch, index), and the next epoch's order is drawn now from the sampler's epoch.

    `loader` is Accelerate's `DataLoaderShard` (the prepared training loader): its one-batch look-ahead
    has already met the end of the DataLoader it wraps when the last batch is handed out
    (`end_of_dataloader`). Returns False, doing nothing, for anything else: no persistent workers, a pass
    not finished (broken off early), a pass already started ahead, or a loader of another kind.
    """
    base = getattr(loader, "base_dataloader", None)
    if not getattr(loader, "end_of_dataloader", False) or base is None:
        return False
    iterator = getattr(base, "_iterator", None)
    if not (base.persistent_workers and base.num_workers > 0) or iterator is None or "_next_pass" in base.__dict__:
        return False
    if iterator._tasks_outstanding or iterator._num_yielded < len(iterator):
        return False
    iterator._reset(base)  # workers resume and get their first indices of the new pass
    if not getattr(base, "_run_ahead", False):
        base.__class__ = _run_ahead_class(type(base))
    base.__dict__["_next_pass"] = iterator
    return True


@functools.cache
def _run_ahead_class(cls: type) -> type:
    """`cls` with `iter()` returning, once, the pass `start_next_pass` started (a direct subclass: the
    instance's layout stays `cls`'s, which the swap of an instance's `__class__` needs)."""

    def __iter__(self):
        started = self.__dict__.pop("_next_pass", None)
        return started if started is not None else cls.__iter__(self)

    return type(f"RunAhead{cls.__name__}", (cls,), {"__iter__": __iter__, "_run_ahead": True})


def seed_worker(worker_id: int) -> None:
    """Seed a worker's global RNGs from torch's per-worker seed (only user transforms use them).

    OpenCV's thread count is set before the fork instead (`sequential_opencv_in_workers`)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class ShardedBatchSampler(Sampler[list[int]]):
    """Batches `[0, b), [b, 2b), ...` of a sequential order; this shard keeps every `num_shards`-th one.

    The batches are those a rectangular dataset computed its shapes for (same `batch_size`), so every
    batch has one shape; shards may differ by one batch, which evaluation (no collective per batch) allows.
    """

    def __init__(self, length: int, batch_size: int, shard: int = 0, num_shards: int = 1) -> None:
        if not 0 <= shard < num_shards:
            raise ValueError(f"ShardedBatchSampler: shard {shard} is not in [0, {num_shards})")
        self.length, self.batch_size, self.shard, self.num_shards = length, batch_size, shard, num_shards

    def __iter__(self):
        starts = range(0, self.length, self.batch_size)
        for k in range(self.shard, len(starts), self.num_shards):
            yield list(range(starts[k], min(starts[k] + self.batch_size, self.length)))

    def __len__(self) -> int:
        batches = -(-self.length // self.batch_size)
        return len(range(self.shard, batches, self.num_shards))


def build_dataloader(
    dataset: YoloDataset,
    batch_size: int = 16,
    workers: int = 2,
    shuffle: bool = True,
    seed: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    num_shards: int = 1,
    shard: int = 0,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A DataLoader over `dataset` with `collate_fn`, seeded shuffling and persistent workers.

    Rect datasets are never shuffled (their batch shapes follow the sorted order). A given `sampler`
    (e.g. `ImageWeightSampler`) replaces the shuffling. With `num_shards > 1` (evaluation under DDP: the
    process count and this rank) the loader is sequential and yields this shard's whole batches only
    (`ShardedBatchSampler`); use it as is, not through `accelerator.prepare`.
    """
    if num_shards > 1:
        if shuffle and not dataset.rect:
            raise ValueError("build_dataloader: a sharded loader is sequential; pass shuffle=False")
        sharded = ShardedBatchSampler(len(dataset), batch_size, shard, num_shards)
        batching: dict[str, Any] = {"batch_sampler": sharded}
    else:
        generator = torch.Generator().manual_seed(int(seed))
        shuffle = shuffle and not dataset.rect
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        batching = {"batch_size": batch_size, "sampler": sampler, "drop_last": drop_last}
    sequential_opencv_in_workers(workers)
    return DataLoader(
        dataset,
        **batching,
        num_workers=workers,
        collate_fn=BatchCollate(workers) if workers > 0 else collate_fn,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(int(seed) + 1),
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
    )


def validation_loader(
    dataset: YoloDataset, batch_size: int, workers: int, num_shards: int, shard: int, **options: Any
) -> DataLoader:
    """This rank's whole batches of a validation split, in order (`build_dataloader` with `num_shards`): used
    as it is, not through `accelerator.prepare`, in training and in `accelyolo val` alike. `options`: seed,
    pin_memory."""
    return build_dataloader(
        dataset, batch_size=batch_size, workers=workers, shuffle=False, num_shards=num_shards, shard=shard, **options
    )


def class_maps(result: Any, nc: int) -> np.ndarray:
    """Per-class mAP50-95 `(nc,)` of a `DetectionResult`; 0 for classes without ground truth."""
    maps = np.zeros(nc, dtype=np.float64)
    classes = np.asarray(result.classes, dtype=np.int64)
    keep = classes < nc
    maps[classes[keep]] = np.asarray(result.ap, dtype=np.float64)[keep]
    return maps


class ImageWeightSampler(Sampler[int]):
    """`--image-weights`: an epoch draws `len(dataset)` images with replacement, each with probability
    proportional to the summed class weights of its boxes (YOLOv5).

    Class weights = inverse label frequency (normalized) x (1 - per-class mAP)^2 / nc, so rare classes and
    classes the last validation found hard are seen more often; images without boxes are not drawn.
    Before the first validation the mAPs are 0. The draw is a pure function of (seed, epoch, weights):
    the trainer shares the main process's mAPs with every rank, so every rank computes the same draw and
    Accelerate's sharding gives each its own disjoint batches of it; a resumed run (its mAPs restored from
    the checkpoint) draws the same images.
    """

    def __init__(self, dataset: YoloDataset, seed: int = 0) -> None:
        classes = [lb[:, 0].astype(np.int64) for lb in dataset.labels]
        top = max((int(c.max()) for c in classes if len(c)), default=0)
        self.nc = max(len(dataset.names) if dataset.names else 0, top + 1)
        self.counts = np.stack([np.bincount(c, minlength=self.nc) for c in classes]).astype(np.float64)  # (n, nc)
        frequency = self.counts.sum(0)
        frequency[frequency == 0] = 1  # classes without boxes: weight without effect (no image has them)
        self.label_weights = 1.0 / frequency
        self.label_weights /= self.label_weights.sum()
        self.class_maps = np.zeros(self.nc)
        self.seed, self.epoch = int(seed) % 2**63, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_class_maps(self, maps: Any) -> None:
        """Per-class mAP `(nc,)` of the last validation (clipped to [0, 1])."""
        maps = np.asarray(maps, dtype=np.float64).reshape(-1)
        if maps.shape != (self.nc,):
            raise ValueError(f"image weights: expected {self.nc} per-class mAPs, got {maps.shape[0]}")
        self.class_maps = maps.clip(0.0, 1.0)

    @property
    def class_weights(self) -> np.ndarray:
        return self.label_weights * (1.0 - self.class_maps) ** 2 / self.nc

    @property
    def image_weights(self) -> np.ndarray:
        """Each image's draw weight `(n,)`: its boxes' class weights summed."""
        return self.counts @ self.class_weights

    def indices(self) -> np.ndarray:
        """The epoch's draw `(n,)` of image indices (with replacement)."""
        w = self.image_weights
        n = len(w)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, 0, 2]))  # not an item stream
        if w.sum() <= 0:  # no image has a box: a plain uniform draw
            return rng.integers(0, n, n)
        return rng.choice(n, size=n, replace=True, p=w / w.sum())

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return len(self.counts)
