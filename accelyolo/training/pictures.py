"""Pictures where people look (YOLOv6's engine): the first training batches and, at each validation, a few
validation images with their predicted boxes, written through the trackers Accelerate holds; and
`results.png`, the results.csv columns drawn per epoch, refreshed after every epoch.

The trackers that take images and how they are reached: `accelyolo.training.trackers`.
"""

from __future__ import annotations

import csv
import logging
from typing import TYPE_CHECKING, Any

import torch

from accelyolo.core.boxes import non_max_suppression
from accelyolo.core.defaults import VAL_IOU_THRES
from accelyolo.data.loader import collate_fn, to_model_input
from accelyolo.evaluation.plots import batch_grid, plot_results
from accelyolo.training.callbacks import Callback
from accelyolo.training.trackers import image_trackers, log_image

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from accelyolo.training.records import StepOutput
    from accelyolo.training.trainer import Trainer

__all__ = ["ResultsPlotCallback", "TrackerImagesCallback", "validation_predictions"]

LOGGER = logging.getLogger("accelyolo")


@torch.no_grad()
def validation_predictions(
    model: torch.nn.Module,
    dataset: Any,
    names: list[str],
    images: int = 4,
    conf_thres: float = 0.3,
    iou_thres: float = VAL_IOU_THRES,
    boxes_per_image: int = 5,
) -> tuple[Image.Image, list[torch.Tensor]]:
    """A grid of the first `images` items of `dataset` with `model`'s boxes (score >= `conf_thres`, at
    most `boxes_per_image` each, YOLOv6's choice for its tensorboard pictures), and those boxes per image
    as (n, 6) x1 y1 x2 y2 score class. Items of another shape than the first (rectangular validation
    batches) are left out."""
    items = [dataset[i] for i in range(min(images, len(dataset)))]
    items = [item for item in items if item["image"].shape == items[0]["image"].shape]
    batch = collate_fn(items)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = model(to_model_input(batch["images"].to(device)))
    finally:
        model.train(was_training)
    detections = non_max_suppression(out.float(), conf_thres=conf_thres, iou_thres=iou_thres, max_det=boxes_per_image)
    detections = [d.cpu() for d in detections]
    return batch_grid(batch["images"], None, batch["paths"], names, preds=detections), detections


class TrackerImagesCallback(Callback):
    """Training batches (with their label boxes) in the first epoch this run trains, and validation
    predictions after each validated epoch, sent to the started trackers that take images."""

    first_batches = 3
    val_images = 4
    conf_thres = 0.3
    boxes_per_image = 5

    def __init__(self) -> None:
        self._epoch = 1

    def on_fit_start(self, trainer: Trainer) -> None:
        self._epoch = trainer.state.epoch + 1

    def on_step_end(self, trainer: Trainer, step: StepOutput) -> None:
        if step.epoch != self._epoch or step.batch >= self.first_batches or not self._trackers(trainer):
            return
        batch = trainer.last_batch
        grid = batch_grid(batch["images"].cpu(), batch["targets"].cpu(), batch["paths"], trainer.names)
        self._log(trainer, f"train_batch{step.batch}", grid, step.epoch)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if row.get("metrics/mAP50") is None or not self._trackers(trainer):
            return
        grid, _ = validation_predictions(
            trainer.ema.ema,
            trainer.val_dataset,
            trainer.names,
            images=self.val_images,
            conf_thres=self.conf_thres,
            iou_thres=trainer.cfg.iou_thres,
            boxes_per_image=self.boxes_per_image,
        )
        self._log(trainer, "val_predictions", grid, int(row["epoch"]))

    def on_fit_end(self, trainer: Trainer) -> None:
        results = trainer.run_dir / "results.png"  # drawn after every epoch by ResultsPlotCallback
        if results.is_file() and self._trackers(trainer):
            from PIL import Image

            with Image.open(results) as image:
                self._log(trainer, "results", image.convert("RGB"), trainer.state.epoch)

    @staticmethod
    def _trackers(trainer: Trainer) -> list[str]:
        if not trainer.trackers_started or not trainer.accelerator.is_main_process:
            return []
        return image_trackers(trainer.accelerator)

    def _log(self, trainer: Trainer, tag: str, grid: Image.Image, step: int) -> None:
        for name in self._trackers(trainer):
            log_image(trainer.accelerator, name, tag, grid, step)


class ResultsPlotCallback(Callback):
    """`results.png` in the run folder (main process, `plots: true`), redrawn after every epoch from the
    rows of this run (and, on resume, the rows results.csv already holds)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        self.rows = []
        path = trainer.run_dir / "results.csv"
        if trainer.state.epoch > 0 and path.is_file():
            with path.open(newline="") as handle:
                self.rows = [r for r in csv.DictReader(handle) if _epoch(r) <= trainer.state.epoch]

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))
        if trainer.cfg.plots and trainer.accelerator.is_main_process:
            plot_results(self.rows, trainer.run_dir / "results.png")


def _epoch(row: dict[str, Any]) -> int:
    try:
        return int(float(row.get("epoch") or 0))
    except ValueError:
        return 0
