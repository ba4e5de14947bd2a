"""The donor pool's shared slots: loader workers decode each pool image about once per epoch together,
and no pixel or random choice changes (items equal those of one process, with or without the slots)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

import accelyolo.data.dataset as dataset_module
from accelyolo.data import YoloDataset, build_dataloader
from tests.test_transforms import _items_by_path, rect_dataset

POOL_MB = 2 * 16 * (64 * 64 * 9 // 4) / 2**20  # a buffer whose half holds 16 images at 64 px: a pool of 16
NAMES = list("abcdefg")


class CountingDataset(YoloDataset):
    """Counts the decodes of each image per epoch, in shared memory so that loader workers' count too."""

    def __init__(self, *args, epochs: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.decodes = torch.zeros((epochs, len(self)), dtype=torch.int64).share_memory_()  # (epoch, image)

    def _decode(self, i: int) -> np.ndarray:
        self.decodes[int(self._state[0]), i] += 1
        return super()._decode(i)


def test_pool_items_in_workers_equal_one_process_without_shared_slots(tmp_path: Path, monkeypatch):
    images = rect_dataset(tmp_path, n=48)
    hyp = {"mosaic": 1.0, "mixup": 0.5, "degrees": 5.0}
    ds = YoloDataset(images, imgsz=64, augment=True, hyp=hyp, names=NAMES, seed=3, buffer_mb=POOL_MB)
    assert ds.pool_slots is not None and ds.pool_slots.count == 16
    monkeypatch.setattr(dataset_module, "shared_pool_slots", lambda *args: None)
    alone = YoloDataset(images, imgsz=64, augment=True, hyp=hyp, names=NAMES, seed=3, buffer_mb=POOL_MB)
    assert alone.pool_slots is None  # each process its own copies, as before the shared slots
    dl = build_dataloader(ds, batch_size=4, workers=2, shuffle=True, seed=1)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        alone.set_epoch(epoch)
        in_workers = _items_by_path(dl)
        pool = ds.donor_pool(epoch)
        for k, j in enumerate(pool):  # the workers filled every slot with its image's exact pixels
            np.testing.assert_array_equal(ds.pool_slots.get(k, epoch), alone.load_image(int(j)))
        for i in range(len(ds)):
            item = alone[i]
            image, rows = in_workers[item["path"]]
            np.testing.assert_array_equal(image, item["image"].transpose(2, 0, 1))
            np.testing.assert_array_equal(rows[:, 0], item["classes"])
            np.testing.assert_array_equal(rows[:, 1:], item["boxes"])
            np.testing.assert_array_equal(ds[i]["image"], item["image"])  # the main process, from the slots


def test_workers_decode_each_pool_image_about_once_per_epoch(tmp_path: Path):
    images = rect_dataset(tmp_path, n=48)
    hyp = {"mosaic": 1.0, "mixup": 0.0}  # mixup would take a second primary: one decode more per item
    ds = CountingDataset(images, imgsz=64, augment=True, hyp=hyp, names=NAMES, buffer_mb=POOL_MB)
    dl = build_dataloader(ds, batch_size=4, workers=2, shuffle=True, seed=0)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        assert len(_items_by_path(dl)) == len(ds)
        in_pool = np.zeros(len(ds), bool)
        in_pool[ds.donor_pool(epoch)] = True
        decodes = ds.decodes[epoch].numpy()
        assert decodes[~in_pool].max() == 1  # a primary outside the pool: once per epoch
        # each worker would decode each pool image it draws (~2 x 16); two workers missing the same slot at
        # the same instant both decode it, which is rare
        assert decodes[in_pool].sum() <= 16 + 4 and decodes[in_pool].max() <= 2


def test_one_process_decodes_each_image_at_most_once_per_epoch(tmp_path: Path):
    """Primaries between pool draws no longer cost a pool image its place: an evicted one is copied back
    from its slot (an LRU holding ~27 of these images against 48 primaries and a pool of 16)."""
    images = rect_dataset(tmp_path, n=48)
    ds = CountingDataset(images, imgsz=64, augment=True, hyp={"mosaic": 1.0, "mixup": 0.0}, names=NAMES,
                         buffer_mb=POOL_MB * 0.75, epochs=3)  # fmt: skip
    assert ds.pool_slots is not None
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            ds[i]
        assert ds.decodes[epoch].max() <= 1


def test_no_shared_pool_without_room_in_shared_memory(tmp_path: Path, monkeypatch, caplog):
    """A full /dev/shm kills a worker with SIGBUS: without twice the pool's size free, each process keeps its
    own copies (items unchanged)."""
    import accelyolo.data.pool as pool_module

    images = rect_dataset(tmp_path, n=48)
    shared = YoloDataset(images, imgsz=64, augment=True, hyp={"mosaic": 1.0}, names=NAMES, buffer_mb=POOL_MB)
    monkeypatch.setattr(pool_module.sys, "platform", "linux")
    monkeypatch.setattr(pool_module.shutil, "disk_usage", lambda path: SimpleNamespace(free=0))
    with caplog.at_level("INFO", logger="accelyolo"):
        alone = YoloDataset(images, imgsz=64, augment=True, hyp={"mosaic": 1.0}, names=NAMES, buffer_mb=POOL_MB)
    assert alone.pool_slots is None and "--shm-size" in caplog.text
    for i in range(len(alone)):
        np.testing.assert_array_equal(alone[i]["image"], shared[i]["image"])
