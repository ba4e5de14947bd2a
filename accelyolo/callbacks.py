"""Small event hooks around the training loop: progress bar, results.csv, trackers.

A callback observes; it never swaps the trainer's model or optimizer, and none depends on the order of
the others. The hooks receive the trainer and a plain dict of what just happened.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from accelyolo.trainer import Trainer

LOGGER = logging.getLogger("accelyolo")


class Callback:
    """Override any of these; each is called on every process unless the callback checks itself."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_step_end(self, trainer: Trainer, step: dict[str, Any]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


class ProgressCallback(Callback):
    """A rich progress bar per epoch on the main process: epoch, memory, losses, instances, size."""

    def __init__(self) -> None:
        self._progress = None
        self._task = None

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if not trainer.accelerator.is_main_process:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[speed]}"),
            transient=False,
        )
        self._progress.start()
        desc = f"epoch {epoch + 1}/{trainer.cfg.epochs}"
        self._task = self._progress.add_task(desc, total=trainer.batches_per_epoch, info="", speed="")

    def on_step_end(self, trainer: Trainer, step: dict[str, Any]) -> None:
        if self._progress is None:
            return
        losses = " ".join(f"{k}={v:.3f}" for k, v in step["mean_losses"].items())
        info = f"{step['memory']} {losses} inst={step['instances']} size={step['size']}"
        speed = f"{step['images_per_s']:.1f} img/s"
        self._progress.update(self._task, advance=1, info=info, speed=speed)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if trainer.accelerator.is_main_process and "metrics/mAP50" in row:
            trainer.console.print(
                f"  val: P={row['metrics/precision']:.3f} R={row['metrics/recall']:.3f} "
                f"mAP50={row['metrics/mAP50']:.3f} mAP50-95={row['metrics/mAP50-95']:.3f}"
            )

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class CSVLogger(Callback):
    """Appends one row per epoch to `results.csv` (kept and continued on resume)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._columns: list[str] | None = None  # the file's header, read once (a resumed run keeps its own)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if not trainer.accelerator.is_main_process:
            return
        new = not self.path.exists() or self.path.stat().st_size == 0
        if self._columns is None and not new:
            with self.path.open(newline="") as handle:
                self._columns = next(csv.reader(handle), None)
        columns = list(row) if new or not self._columns else self._columns + [c for c in row if c not in self._columns]
        self._columns = columns
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k, "")) for k in columns})


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return value


class TrackerCallback(Callback):
    """Sends each epoch's row to the Accelerate trackers (`log_with`), when any were started."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if trainer.trackers_started:
            values = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch"}
            trainer.accelerator.log(values, step=int(row["epoch"]))
