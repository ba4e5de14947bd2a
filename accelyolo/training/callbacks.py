"""Small event hooks around the training loop: progress bar, results.csv, trackers, pictures.

A callback observes; it never swaps the trainer's model or optimizer, and none depends on the order of
the others. `on_step_end` receives the step's `StepOutput` (a dataclass), `on_epoch_end` the epoch's
results.csv row (a dict: epoch, losses, metrics — None when the epoch was not validated —, fitness, LRs,
time). `close` is called however the run ends (finished, stopped, interrupted, failed). A callback that
wants the run to stop calls `trainer.request_stop()`: every rank stops after the same step.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelyolo.core.fileio import write_bytes_atomically

if TYPE_CHECKING:  # pragma: no cover
    from accelyolo.training.records import StepOutput
    from accelyolo.training.trainer import Trainer

LOGGER = logging.getLogger("accelyolo")


class Callback:
    """Override any of these; each is called on every process unless the callback checks itself."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_step_end(self, trainer: Trainer, step: StepOutput) -> None: ...

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...

    def close(self, trainer: Trainer) -> None:
        """Release what the callback holds open (a live display, a file); called whatever happened."""


class ProgressCallback(Callback):
    """A rich progress bar per epoch on the main process: epoch, memory, losses, instances, size.

    Redrawn from `on_step_end`, at most every `refresh_s` seconds and at the epoch's last batch, never by rich's
    own refresh thread: a thread waking ten times a second takes the GIL and a core from the step's threads.
    """

    refresh_s = 0.25

    def __init__(self) -> None:
        self._progress = None
        self._task = None
        self._drawn_at = 0.0

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
            auto_refresh=False,
        )
        self._progress.start()
        self._drawn_at = 0.0
        desc = f"epoch {epoch}/{trainer.cfg.epochs}"
        self._task = self._progress.add_task(desc, total=trainer.batches_per_epoch, info="", speed="")

    def on_step_end(self, trainer: Trainer, step: StepOutput) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if now - self._drawn_at < self.refresh_s and step.batch + 1 < trainer.batches_per_epoch:
            self._progress.update(self._task, advance=1)
            return
        self._drawn_at = now
        losses = " ".join(f"{k}={v:.3f}" for k, v in step.mean_losses.items())
        info = f"{_memory()} {losses} inst={step.instances} size={step.image_size}"
        speed = f"{step.images_per_s:.1f} img/s"
        self._progress.update(self._task, advance=1, info=info, speed=speed, refresh=True)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.close(trainer)
        if trainer.accelerator.is_main_process and row.get("metrics/mAP50") is not None:
            LOGGER.info(
                "  val: P=%.3f R=%.3f mAP50=%.3f mAP50-95=%.3f",
                row["metrics/precision"],
                row["metrics/recall"],
                row["metrics/mAP50"],
                row["metrics/mAP50-95"],
            )

    def close(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _memory() -> str:
    import torch

    return f"{torch.cuda.memory_reserved() / 1e9:.2f}G" if torch.cuda.is_available() else ""


class CSVLogger(Callback):
    """Appends one row per epoch to `results.csv` (continued on resume, after `write_results_csv`).

    The columns are those of the first row written (a resumed run keeps its file's header); an epoch that
    was not validated leaves its metric cells empty, so every row lines up with the header. The row is
    appended after the epoch's checkpoint is saved, and the checkpoint holds the rows of every epoch so far
    (`RunState.history`): a crash between the two loses nothing that a resume does not write back.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._columns: list[str] | None = None

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if not trainer.accelerator.is_main_process:
            return
        new = not self.path.exists() or self.path.stat().st_size == 0
        if self._columns is None:
            if not new:
                with self.path.open(newline="") as handle:
                    self._columns = next(csv.reader(handle), None)
            self._columns = self._columns or list(row)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in self._columns})


def write_results_csv(path: Path, rows: list[dict[str, Any]], epoch: int) -> None:
    """Make `results.csv` hold the rows of epochs 1..`epoch`, each once (replaced atomically): what a resume
    from a checkpoint of `epoch` does first. `rows` are the checkpoint's own (`RunState.history`), so a row
    that a crash kept from being written comes back, and a row written after the checkpoint (an epoch the
    resumed run trains again) goes. A bundle from before the rows were saved holds none: then the file keeps
    its own rows up to `epoch`."""
    path = Path(path)
    if len(rows) >= epoch:
        rows = [row for row in rows if int(row["epoch"]) <= epoch]
        columns = list(rows[0]) if rows else []
    elif path.is_file():
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = [row for row in reader if _epoch_of(row) <= epoch]
    else:
        return
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: _fmt(row.get(k)) for k in columns} for row in rows)
    write_bytes_atomically(path, text.getvalue().encode())


def _epoch_of(row: dict[str, str]) -> float:
    """The epoch of a row read back from results.csv; a damaged row counts as past every epoch (dropped)."""
    try:
        return float(row.get("epoch") or "inf")
    except ValueError:
        return math.inf


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return value


class TrackerCallback(Callback):
    """Sends each epoch's row to the Accelerate trackers (`log_with`), when any were started."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if trainer.trackers_started:
            values = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch"}
            trainer.accelerator.log(values, step=int(row["epoch"]))


class PlotsCallback(Callback):
    """Pictures in the run folder (main process, `plots: true`): labels.png, the first training batches,
    and at the end the per-class table, PR/F1/P/R curves and confusion matrix of the last validation."""

    first_batches = 3

    def on_fit_start(self, trainer: Trainer) -> None:
        self._epoch = trainer.state.epoch + 1  # the first epoch this run trains
        if self._active(trainer) and trainer.state.epoch == 0:
            from accelyolo.evaluation.plots import plot_labels

            plot_labels(trainer.train_dataset.labels, trainer.names, trainer.run_dir / "labels.png")

    def on_step_end(self, trainer: Trainer, step: StepOutput) -> None:
        if self._active(trainer) and step.epoch == self._epoch and step.batch < self.first_batches:
            from accelyolo.evaluation.plots import plot_batch

            batch = trainer.last_batch
            plot_batch(
                batch["images"].cpu(),
                batch["targets"].cpu(),
                batch["paths"],
                trainer.names,
                trainer.run_dir / f"train_batch{step.batch}.png",
            )

    def on_fit_end(self, trainer: Trainer) -> None:
        result = trainer.last_result
        if result is None or not trainer.accelerator.is_main_process:
            return
        from accelyolo.core.logs import render_text
        from accelyolo.evaluation.reports import per_class_table, plot_confusion_matrix, plot_curves

        LOGGER.info("%s", render_text(per_class_table(result, trainer.names)))
        if trainer.cfg.plots:
            plot_curves(result, trainer.names, trainer.run_dir)
            plot_confusion_matrix(result, trainer.names, trainer.run_dir)

    @staticmethod
    def _active(trainer: Trainer) -> bool:
        return trainer.cfg.plots and trainer.accelerator.is_main_process


class HubPushCallback(Callback):
    """`push_to_hub: org/name`: at the end of the run the main process uploads the inference weights (best's
    EMA) with their config.json and model card. A failed upload is logged with the command that retries it;
    the run's results stay as they are."""

    def on_fit_start(self, trainer: Trainer) -> None:
        from accelyolo.core.config import HUB_ID, ConfigError

        repo = trainer.cfg.push_to_hub
        if repo and not HUB_ID.match(repo):  # refused before training, not after it
            raise ConfigError(f"'push_to_hub' = {repo!r}: expected a Hub model id of the form 'org/name'.")

    def on_fit_end(self, trainer: Trainer) -> None:
        repo = trainer.cfg.push_to_hub
        weights = trainer.weights_dir / "inference.safetensors"
        if not repo or not trainer.accelerator.is_main_process or not weights.is_file():
            return
        from accelyolo.weights.hub import push_to_hub

        try:
            url = push_to_hub(weights, repo)
        except Exception as error:  # the network, a login, a quota: none of them undoes the finished run
            LOGGER.error("push_to_hub: %s; retry with: accelyolo push --weights %s --repo %s", error, weights, repo)
            return
        LOGGER.info("push_to_hub: uploaded %s to %s (%s)", weights.name, repo, url)
