"""A run's `weights/` folder: which bundles it holds and when each is written.

- `last.safetensors`: after every saved epoch (the full training state: exact resume);
- `best.safetensors`: a copy of it when the epoch improved the best fitness among eligible epochs;
- `best_stop_aug.safetensors`: when it improved the best after strong augmentation stopped (YOLOv6);
- `epoch{K}.safetensors`: every `save_period` epochs, and the last `save_last_n` epochs (older ones dropped);
- `inference.safetensors`: at the end, the EMA weights of best (else last) without the training state.

The trainer decides what a bundle holds and which epochs improved; this module writes and copies the files
(on the main process: the trainer calls it there only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from accelyolo.weights.checkpoint import copy_checkpoint, save_checkpoint, strip_checkpoint

__all__ = ["RunWeights"]

LOGGER = logging.getLogger("accelyolo")


class RunWeights:
    """The bundle files of one run in `folder`; `save_period` and `save_last_n` as the options of those names."""

    def __init__(self, folder: Path, save_period: int = 0, save_last_n: int = 0) -> None:
        self.folder, self.save_period, self.save_last_n = Path(folder), save_period, save_last_n

    @property
    def last(self) -> Path:
        return self.folder / "last.safetensors"

    @property
    def best(self) -> Path:
        return self.folder / "best.safetensors"

    @property
    def best_stop_aug(self) -> Path:
        return self.folder / "best_stop_aug.safetensors"

    @property
    def inference(self) -> Path:
        return self.folder / "inference.safetensors"

    def write(self, epoch: int, bundle: dict[str, Any], best: bool, best_stop_aug: bool) -> Path:
        """`last` from `bundle` (`save_checkpoint`'s keywords), then the copies the epoch earns."""
        last = save_checkpoint(self.last, **bundle)
        LOGGER.info("epoch %d: saved weights/last.safetensors%s", epoch, " and best" if best else "")
        if best:
            copy_checkpoint(last, self.best)
        if best_stop_aug:
            copy_checkpoint(last, self.best_stop_aug)
        periodic = self.save_period > 0 and epoch % self.save_period == 0
        if periodic or self.save_last_n > 0:
            copy_checkpoint(last, self.folder / f"epoch{epoch}.safetensors")
        if self.save_last_n > 0:
            self.drop_old_epoch_files(epoch)
        return last

    def drop_old_epoch_files(self, epoch: int) -> None:
        """Keep `epoch{K}` bundles of the last `save_last_n` epochs (and those `save_period` asks for)."""
        for path in self.folder.glob("epoch*.safetensors"):
            k = path.stem[len("epoch") :]
            if not k.isdigit() or int(k) > epoch - self.save_last_n:
                continue
            if self.save_period > 0 and int(k) % self.save_period == 0:
                continue
            path.unlink()

    def fall_back_to_last(self, stop_aug: bool) -> None:
        """No epoch was eligible for best: `best` is the last epoch's model, and so is `best_stop_aug` when
        the last epoch trained without strong augmentation (`stop_aug`)."""
        copy_checkpoint(self.last, self.best)
        if stop_aug:
            copy_checkpoint(self.last, self.best_stop_aug)

    def write_inference(self) -> Path | None:
        """`inference.safetensors` from best, else last; None when the run saved neither."""
        source = self.best if self.best.exists() else self.last
        if not source.exists():
            return None
        strip_checkpoint(source, self.inference)
        return self.inference
