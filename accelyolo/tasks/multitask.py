"""Detection + semantic segmentation in one network, trained jointly (the multi-task fork of the seeds).

`MultiTaskExperiment` is an `Experiment` whose model has a segmentation head beside its detection head
(`build_model(..., seg_classes=K)`, any family), with its paired data, objective and evaluator
(`MultiTaskEvaluator`); the training loop is the detection one. `fit(segment=True)` (`--segment`) adds it; the
data.yaml adds `seg_train`, `seg_val`, `seg_names`, `seg_ignore` (`accelyolo.data.segmentation`).

- Each iteration takes one detection batch and one segmentation batch (`PairedLoader`: the two
  loaders zipped, the shorter sets the epoch length) and makes ONE forward call
  `model(det_images, seg_images)`, so DDP sees every parameter used, one backward and one optimizer
  step (accumulation, AMP, DDP, EMA exactly as for detection).
- Loss: `det_gain · det_loss + seg_gain · CE(seg) · batch_size` (the seed's gains 0.6 and 0.35),
  cross-entropy with the ignore value as ignore index and optional class weights; `seg` is its own
  loss column (results.csv `train/seg_loss`, the progress bar).
- Validation: mAP as for detection, plus pixel accuracy and mIoU on `seg_val` (confusion matrices per
  image, gathered from every rank and deduplicated by path, `accelyolo.evaluation.segmetrics`) every
  `seg_val_interval` epochs and every epoch of the last `seg_val_interval`. Fitness for `best` =
  `det_weight · detection fitness + (1 - det_weight) · mIoU`, with the last measured mIoU (0 before
  the first) on epochs that do not measure it.
- Checkpoints: the same bundle as detection; `model` metadata holds `seg_classes`, and `seg_names`,
  `seg_ignore` are recorded beside `names`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from accelyolo.core.config import ConfigError
from accelyolo.data.demo import demo_multitask_yaml
from accelyolo.data.loader import to_model_input
from accelyolo.data.segmentation import SegmentationDataset, SegSpec, build_seg_dataloader, load_seg_spec
from accelyolo.evaluation.evaluators import MultiTaskEvaluator, MultiTaskResult
from accelyolo.losses.objective import DetectionObjective, Objective
from accelyolo.training.callbacks import Callback
from accelyolo.training.experiment import Experiment
from accelyolo.training.records import RunData, RunLoaders

__all__ = [
    "MultiTaskData",
    "MultiTaskEvaluator",
    "MultiTaskExperiment",
    "MultiTaskLoaders",
    "MultiTaskLoss",
    "MultiTaskObjective",
    "MultiTaskResult",
    "PairedLoader",
    "seg_class_weights",
]

LOGGER = logging.getLogger("accelyolo")
SEG_COLUMNS = ("pixel_accuracy", "mIoU")


class MultiTaskLoss(nn.Module):
    """`total, items = loss(det_preds, targets, seg_logits, masks)`; `names` = the detection terms + `seg`.

    Args:
        det_loss: the family's detection loss (`total, items = det_loss(preds, targets)`, `.names`).
        ignore: mask value excluded from the cross-entropy.
        det_gain, seg_gain: `total = det_gain · det_total + seg_gain · CE · batch_size`.
        class_weights: (K,) cross-entropy weights, or None for equal weights.
    """

    def __init__(
        self,
        det_loss: nn.Module,
        ignore: int,
        det_gain: float = 0.6,
        seg_gain: float = 0.35,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.det_loss, self.ignore = det_loss, int(ignore)
        self.det_gain, self.seg_gain = float(det_gain), float(seg_gain)
        self.names = (*det_loss.names, "seg")
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(
        self, det_preds: Any, targets: torch.Tensor, seg_logits: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        det_total, det_items = self.det_loss(det_preds, targets)
        logits = seg_logits.float()  # (B, K, H, W); CE in fp32 under AMP
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        if (masks != self.ignore).any():
            seg = F.cross_entropy(logits, masks.long(), weight=weight, ignore_index=self.ignore)
        else:  # an all-ignore batch: no signal, but keep the graph (DDP) and a finite loss
            seg = logits.sum() * 0.0
        total = self.det_gain * det_total + self.seg_gain * seg * masks.shape[0]
        return total, torch.cat((det_items.detach().float().reshape(-1), seg.detach().reshape(1)))


class MultiTaskObjective(Objective):
    """Both tasks in ONE forward call `model(det_images, seg_images)` (DDP sees every parameter used), scored
    by a `MultiTaskLoss`; the detection predictions go to a wrapping objective (distillation)."""

    def __init__(self, loss: MultiTaskLoss, channels_last: bool = False) -> None:
        self.loss, self.channels_last = loss, channels_last
        self.names = tuple(loss.names)

    def run(self, model: Any, batch: dict[str, Any], images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        seg_images = to_model_input(batch["seg_images"], self.channels_last)
        det_preds, seg_logits = model(images, seg_images)
        total, items = self.loss(det_preds, batch["targets"], seg_logits, batch["seg_masks"])
        return total, items, det_preds


class PairedLoader:
    """One detection batch and one segmentation batch per step; the shorter loader sets the length.

    Yields the detection batch dict with `seg_images` uint8 (B, 3, h, w) and `seg_masks` int64 (B, h, w).
    """

    def __init__(self, det_loader: Any, seg_loader: Any, seg_dataset: SegmentationDataset) -> None:
        self.det_loader, self.seg_loader, self.seg_dataset = det_loader, seg_loader, seg_dataset

    def __len__(self) -> int:
        return min(len(self.det_loader), len(self.seg_loader))

    def set_epoch(self, epoch: int) -> None:
        for loader in (self.det_loader, self.seg_loader):
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
        self.seg_dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for det_batch, seg_batch in zip(self.det_loader, self.seg_loader):
            yield {**det_batch, "seg_images": seg_batch["images"], "seg_masks": seg_batch["masks"]}


@dataclass(frozen=True, kw_only=True)
class MultiTaskData(RunData):
    """The detection data plus the segmentation spec (`seg_*` keys of the data.yaml) and its two datasets."""

    seg_spec: SegSpec
    seg_train: SegmentationDataset
    seg_val: SegmentationDataset

    @property
    def seg_names(self) -> list[str]:
        """The segmentation classes, in id order."""
        return list(self.seg_spec.names)


@dataclass(frozen=True, kw_only=True)
class MultiTaskLoaders(RunLoaders):
    """`train` pairs a detection and a segmentation batch per step (`PairedLoader`); `seg_val` feeds mIoU."""

    seg_val: Any


def seg_class_weights(weights: dict | None, names: list[str], source: str) -> torch.Tensor | None:
    """(K,) cross-entropy weights from `{name or id: weight}` (others 1); an unknown class is a `ConfigError`."""
    if not weights:
        return None
    out = torch.ones(len(names))
    for key, value in weights.items():
        if isinstance(key, int) and 0 <= key < len(names):
            out[key] = float(value)
        elif str(key) in names:
            out[names.index(str(key))] = float(value)
        else:
            raise ConfigError(
                f"'seg_class_weights': {key!r} is not a segmentation class of {source} "
                f"(ids 0..{len(names) - 1} or names {', '.join(names)})"
            )
    return out


class SegmentationTable(Callback):
    """At the end of the run, the last measured segmentation metrics per class, in the log (those the run's
    evaluator kept, else those of the last validation)."""

    def on_fit_end(self, trainer: Any) -> None:
        seg = getattr(trainer.evaluator, "last_seg", None) or getattr(trainer.last_validation, "segmentation", None)
        if seg is not None and trainer.accelerator.is_main_process:
            LOGGER.info("segmentation, last validation (%d pixels):\n%s", seg.pixels, seg.table())


class MultiTaskExperiment(Experiment):
    """The detection experiment plus a segmentation head, paired data, loss term, evaluator and columns."""

    def data_yaml(self) -> Path:
        return Path(self.cfg.data) if self.cfg.data else demo_multitask_yaml()

    def build_datasets(self) -> MultiTaskData:
        """Detection datasets as `Experiment`'s, plus the segmentation spec and datasets of the same data.yaml."""
        detection = super().build_datasets()
        cfg = self.cfg
        yaml_path = detection.spec.yaml_path
        with self.accelerator.main_process_first():
            spec = load_seg_spec(yaml_path)
            if spec is None:
                raise ConfigError(
                    f"--segment: {yaml_path} has no 'seg_train'; add seg_train, seg_val and "
                    "seg_names (see accelyolo.data.segmentation), or train without --segment"
                )
            common = dict(names=spec.names, imgsz=cfg.imgsz, ignore=spec.ignore, seed=cfg.seed)
            seg_train = SegmentationDataset(
                spec.splits["seg_train"],
                augment=True,
                hyp=cfg.hyp(),
                aspect=cfg.seg_aspect,
                scale=cfg.seg_scale,
                **common,
            )
            seg_val = SegmentationDataset(spec.splits["seg_val"], augment=False, **common)
        return MultiTaskData(
            train=detection.train, val=detection.val, spec=detection.spec, seg_spec=spec, seg_train=seg_train,
            seg_val=seg_val,
        )  # fmt: skip

    def build_dataloaders(self, data: RunData) -> MultiTaskLoaders:
        """The paired (detection, segmentation) train loader, prepared here, and the detection val loader.

        Accelerate's `prepare` in the trainer passes the `PairedLoader` through unchanged, so its two loaders
        are prepared (sharded, moved to the device) here; so is the segmentation val loader.
        """
        if not isinstance(data, MultiTaskData):
            raise ConfigError(
                "--segment trains on the detection and segmentation data its own build_datasets reads from the "
                f"data.yaml; datasets an experiment builds otherwise must come as a MultiTaskData, got "
                f"{type(data).__name__}"
            )
        cfg = self.cfg
        detection = super().build_dataloaders(data)
        batch = cfg.seg_batch_size or cfg.batch_size
        seg_train = build_seg_dataloader(data.seg_train, batch, cfg.workers, shuffle=True, seed=cfg.seed)
        seg_val = build_seg_dataloader(data.seg_val, batch * 2, cfg.workers, shuffle=False, seed=cfg.seed)
        det_train, seg_train, seg_val = self.accelerator.prepare(detection.train, seg_train, seg_val)
        return MultiTaskLoaders(
            train=PairedLoader(det_train, seg_train, data.seg_train), val=detection.val,
            image_sampler=detection.image_sampler, seg_val=seg_val,
        )  # fmt: skip

    def model_keywords(self, data: RunData) -> dict[str, Any]:
        return {**super().model_keywords(data), "seg_classes": len(data.seg_names)}

    def build_objective(self, model: nn.Module, data: RunData, names: list[str]) -> Objective:
        """The detection objective's loss and the segmentation cross-entropy, weighted (`MultiTaskLoss`)."""
        cfg = self.cfg
        detection = super().build_objective(model, data, names)
        if not isinstance(detection, DetectionObjective):
            raise ConfigError(f"--segment builds on the detection objective, got {type(detection).__name__}")
        weights = seg_class_weights(cfg.seg_class_weights, data.seg_names, str(data.spec.yaml_path))
        loss = MultiTaskLoss(detection.loss, data.seg_spec.ignore, cfg.det_gain, cfg.seg_gain, weights)
        return MultiTaskObjective(loss, cfg.channels_last)

    def build_evaluator(self, loaders: RunLoaders, data: RunData, names: list[str]) -> MultiTaskEvaluator:
        detection = super().build_evaluator(loaders, data, names)
        return MultiTaskEvaluator(
            detection, loaders.seg_val, self.accelerator, data.seg_names, data.seg_spec.ignore, self.cfg
        )

    def metric_columns(self, metrics: dict[str, float] | None) -> dict[str, Any]:
        row = super().metric_columns(metrics)
        fitness = row.pop("fitness")
        measured = metrics is not None and not np.isnan(metrics.get("pixel_accuracy", float("nan")))
        row.update({f"metrics/{k}": metrics[k] if measured else None for k in SEG_COLUMNS})
        row["fitness"] = fitness  # last, as in a detection run's results.csv
        return row

    def checkpoint_extras(self, data: RunData) -> dict[str, Any]:
        return {**super().checkpoint_extras(data), "seg_names": data.seg_names,
                "seg_ignore": data.seg_spec.ignore}  # fmt: skip

    def build_callbacks(self, run_dir: Path) -> list[Callback]:
        return [*super().build_callbacks(run_dir), SegmentationTable()]
