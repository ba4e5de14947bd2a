"""Collate and DataLoader construction for `YoloDataset`.

Seeding: shuffling uses a plain `RandomSampler` with a `torch.Generator` seeded from `seed`
(Accelerate's `prepare()` re-wraps it for DDP and calls `set_epoch`); the item randomness itself
comes from `(seed, epoch, index)` inside the dataset, so worker count and order do not matter.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from accelyolo.data.dataset import YoloDataset


def to_model_input(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 `(B, 3, H, W)` images -> float `[0, 1]`, NHWC in memory when `channels_last` (the one place
    the trainer, the evaluator and predict turn a batch into model input)."""
    images = images.float() / 255.0
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def collate_fn(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch.

    Returns:
        `images` uint8 `(B, 3, H, W)`; `targets` float32 `(N, 6)` = image index, class, cx, cy,
        w, h (normalized to the letterboxed image); `paths`, `orig_shapes`, `ratio_pads` lists.
    """
    images = torch.from_numpy(np.stack([it["image"] for it in items])).permute(0, 3, 1, 2)  # (B, 3, H, W)
    rows = []
    for b, it in enumerate(items):
        n = len(it["classes"])
        t = np.empty((n, 6), dtype=np.float32)
        t[:, 0], t[:, 1], t[:, 2:] = b, it["classes"], it["boxes"]
        rows.append(t)
    targets = torch.from_numpy(np.concatenate(rows) if rows else np.zeros((0, 6), np.float32))
    return {
        "images": images.contiguous(),  # (B, 3, H, W)
        "targets": targets,
        "paths": [it["path"] for it in items],
        "orig_shapes": [it["orig_shape"] for it in items],
        "ratio_pads": [it["ratio_pad"] for it in items],
    }


def seed_worker(worker_id: int) -> None:
    """Seed a worker's global RNGs from torch's per-worker seed (only user transforms use them)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def build_dataloader(
    dataset: YoloDataset,
    batch_size: int = 16,
    workers: int = 2,
    shuffle: bool = True,
    seed: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over `dataset` with `collate_fn`, seeded shuffling and persistent workers.

    Rect datasets are never shuffled (their batch shapes follow the sorted order).
    """
    generator = torch.Generator().manual_seed(int(seed))
    shuffle = shuffle and not dataset.rect
    sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(int(seed) + 1),
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        drop_last=drop_last,
    )
