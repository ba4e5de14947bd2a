"""Decoded images of the mosaic donor pool, held once in shared memory for every loader worker.

When a dataset does not fit in the LRU buffer, mosaic donors come from a pool of images chosen per
(seed, epoch) (`YoloDataset.donor_pool`). The buffer is per process, so with W loader workers each worker
decoded the whole pool again every epoch: on 16 workers over 1536 images at 640 px a training image cost
about 2 decodes instead of 1.1 in one process. `PoolSlots` holds the pool once for all of them: slot k
holds `pool[k]` of the epoch it is marked with, created in the main process before the workers fork.

Protocol (no lock): a process that needs `pool[k]` in epoch e and does not hold it in its own buffer
copies slot k when the slot is marked e; else it decodes the image (or takes it from its buffer), marks
the slot invalid (-1), writes the pixels and the shape, and marks it e. The pixels are a function of the
image index only, so two processes filling the same slot in the same epoch write identical bytes: a
reader looking while the second one writes sees the same values, and the race is harmless (both may
have decoded the image: rare, and nothing but time is lost). Fillings of different epochs never overlap:
a DataLoader with persistent workers starts an iteration's items only after every worker has finished
those of the previous one (its resume handshake), and `YoloDataset.set_epoch` is called between
iterations. The stores are ordered on x86 (TSO); elsewhere (Python offers no fence) the interpreter's
microseconds between the pixel copy and the epoch store are far longer than a store stays buffered.
"""

from __future__ import annotations

import logging
import shutil
import sys

import numpy as np
import torch

LOGGER = logging.getLogger(__name__)  # a child of "accelyolo"
SHM_FOLDER = "/dev/shm"  # where torch's shared memory lives on Linux


class PoolSlots:
    """`count` slots of at most `slot_bytes` decoded pixels each, in shared memory, with per slot
    `(epoch it holds, height, width)` (epoch -1: empty or being written).

    The memory is reserved, not touched: pages are used as slots are filled.
    """

    def __init__(self, count: int, slot_bytes: int) -> None:
        self.count, self.slot_bytes = int(count), int(slot_bytes)
        storage = torch.UntypedStorage._new_shared(self.count * self.slot_bytes)
        self.pixels = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (self.count, self.slot_bytes))
        self.meta = torch.full((self.count, 3), -1, dtype=torch.int64).share_memory_()

    def get(self, k: int, epoch: int) -> np.ndarray | None:
        """The image of slot `k` as a read-only `(h, w, 3)` view when the slot holds epoch `epoch`."""
        meta = self.meta.numpy()  # numpy views are made per call: a spawned worker gets the tensors, not them
        if meta[k, 0] != epoch:
            return None
        h, w = int(meta[k, 1]), int(meta[k, 2])
        img = self.pixels.numpy()[k, : h * w * 3].reshape(h, w, 3)
        img.flags.writeable = False  # other processes read the same bytes
        return img

    def put(self, k: int, epoch: int, img: np.ndarray) -> None:
        """Fill slot `k` with `img` (uint8 `(h, w, 3)`) for epoch `epoch`; an image larger than a slot is
        left out (the caller keeps its own copy)."""
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.nbytes > self.slot_bytes:
            return
        meta = self.meta.numpy()
        if meta[k, 0] == epoch:  # another process filled it meanwhile
            return
        meta[k, 0] = -1  # invalid while the pixels change (a slot of an older epoch, or one being filled)
        self.pixels.numpy()[k, : img.nbytes] = img.reshape(-1)
        meta[k, 1], meta[k, 2] = img.shape[:2]
        meta[k, 0] = epoch  # last: a reader that sees the epoch sees the pixels


def shared_pool_slots(count: int, slot_bytes: int) -> PoolSlots | None:
    """`PoolSlots`, or None (each process then keeps its own copies, as in its LRU buffer) when the shared
    memory folder has not twice their size free: a full `/dev/shm` (64 MB in a default Docker container)
    kills a loader worker with SIGBUS, and the loader's batches travel there too."""
    need = int(count) * int(slot_bytes)
    if sys.platform.startswith("linux"):
        try:
            free = shutil.disk_usage(SHM_FOLDER).free
        except OSError:
            free = 0
        if free < 2 * need:
            LOGGER.info(
                "donor pool: %s has %.0f MB free, under twice the %.0f MB the shared pool needs; each loader "
                "worker decodes the pool itself (raise the container's --shm-size to share it)",
                SHM_FOLDER, free / 2**20, need / 2**20,
            )  # fmt: skip
            return None
    return PoolSlots(count, slot_bytes)
