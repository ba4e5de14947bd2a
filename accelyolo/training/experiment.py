"""The experiment: what a run is made of, built once and handed to the trainer as one frozen record.

`Experiment.build()` makes every part of a run in order (datasets, loaders, the configuration resolved
against them, model, objective, optimizer, evaluator, checkpoint extras) and returns them as a `RunParts`;
the trainer keeps the loop (prepare, EMA, restore, epochs and steps, validation, best, saving). Each
`build_*` step takes what it needs as arguments and returns what it makes: none writes an attribute, so
a step replaced in a subclass leaves nothing unset. The two steps that need the prepared run come after
`prepare`: `build_scheduler(optimizer, schedule)` and `build_callbacks(run_dir)`.

Features are experiments that extend these steps through `super()`: `MultiTaskExperiment` (a
segmentation head, its paired data, objective and evaluator) and `DistillExperiment` (a teacher's terms
wrapped around the objective). `engine.experiment_class(cfg, user)` combines the ones a configuration asks for
with a user's subclass into one class, the user's outermost, then distillation, then the tasks; so
`fit(experiment=MyExperiment)` with `segment=True` and a teacher gets all three. This is the one way to
replace a part of a run.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from accelyolo.core.config import ConfigError, TrainConfig
from accelyolo.core.defaults import MAX_STRIDE
from accelyolo.data import (
    YoloDataset,
    build_dataloader,
    demo_data_yaml,
    load_data_yaml,
    validation_loader,
    validation_split,
)
from accelyolo.data.dataset import report_summary
from accelyolo.data.loader import ImageWeightSampler
from accelyolo.evaluation.evaluators import DetectionValidator
from accelyolo.families import build_model, family_of, get_family, model_spec
from accelyolo.losses.objective import DetectionObjective, Objective, as_objective
from accelyolo.models import freeze_layers, transfer_weights
from accelyolo.training.callbacks import (
    Callback,
    CSVLogger,
    HubPushCallback,
    PlotsCallback,
    ProgressCallback,
    TrackerCallback,
)
from accelyolo.training.optim import (
    OPTIMIZERS,
    YoloSchedule,
    accumulate_steps,
    auto_optimizer,
    build_optimizer,
    build_scheduler,
    scaled_weight_decay,
)
from accelyolo.training.pictures import ResultsPlotCallback, TrackerImagesCallback
from accelyolo.training.records import RunData, RunLoaders, RunParts
from accelyolo.weights.importers import weights_for_fine_tuning

__all__ = ["Experiment", "class_names", "convert_sync_batchnorm"]

LOGGER = logging.getLogger("accelyolo")


def class_names(dataset: Any) -> list[str]:
    """The run's class names: the training dataset's `names`, whichever step built it (a subclass's
    `build_datasets` must return datasets that carry them)."""
    names = getattr(dataset, "names", None)
    if not names:
        raise ConfigError(
            f"the training dataset ({type(dataset).__name__}) has no class names: a dataset returned by "
            "build_datasets needs a `names` list, one name per class id"
        )
    return [str(name) for name in names]


def convert_sync_batchnorm(model: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module:
    """`--sync-bn`: every BatchNorm synchronized across the processes (`torch.nn.SyncBatchNorm`).

    Refused on one process (nothing to synchronize) and on CPU processes (torch synchronizes GPU tensors only).
    """
    if accelerator.num_processes < 2:
        raise ConfigError(
            "'sync_bn' synchronizes BatchNorm across processes; this run has one. Drop --sync-bn, "
            "or start several processes with `accelerate launch --num_processes N`."
        )
    if accelerator.device.type == "cpu":
        raise ConfigError("'sync_bn' needs GPU processes (torch's SyncBatchNorm does not run on CPU); drop --sync-bn.")
    LOGGER.info("sync_bn: BatchNorm synchronized across %d processes", accelerator.num_processes)
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


class Experiment:
    """Builds the parts of one run for `cfg` on `accelerator` (`resume_from`: the bundle a resumed run reads)."""

    def __init__(self, cfg: TrainConfig, accelerator: Accelerator, resume_from: Path | None = None) -> None:
        self.cfg, self.accelerator, self.resume_from = cfg, accelerator, resume_from

    def with_config(self, cfg: TrainConfig) -> Experiment:
        """A copy of this experiment for another (resolved) configuration; this one is left as it is."""
        other = copy.copy(self)
        other.cfg = cfg
        return other

    def build(self) -> RunParts:
        """Every part known before `prepare`, in the order each needs the ones before it."""
        self.check()
        data = self.build_datasets()
        names = class_names(data.train)  # ['item'] with single_cls
        loaders = self.build_dataloaders(data)
        resolved = self.with_config(self.resolve_config(data, names))
        model = resolved.build_model(data, names)
        objective = as_objective(resolved.build_objective(model, data, names))
        return RunParts(
            cfg=resolved.cfg,
            data=data,
            names=names,
            loaders=loaders,
            model=model,
            objective=objective,
            optimizer=resolved.build_optimizer(model, objective),
            evaluator=resolved.build_evaluator(loaders, data, names),
            checkpoint_extras=resolved.checkpoint_extras(data),
        )

    def check(self) -> None:
        """Options that fail before any work: an unknown model name, or another family's option."""
        get_family(model_spec(self.cfg.model).family).check_options(self.cfg.hyp())

    # ------------------------------------------------------------------------------------ data

    def data_yaml(self) -> Path:
        """The run's data.yaml: `cfg.data`, or the built-in demo data's."""
        return Path(self.cfg.data) if self.cfg.data else demo_data_yaml()

    def build_datasets(self) -> RunData:
        """The train (augmented) and val (letterboxed, rectangular batches) datasets of the data.yaml."""
        cfg = self.cfg
        with self.accelerator.main_process_first():
            spec = load_data_yaml(self.data_yaml())
            for split in ("train", "val"):
                if not spec.splits.get(split):
                    raise ConfigError(f"{spec.yaml_path}: the '{split}' split has no images.")
            common = dict(
                imgsz=cfg.imgsz,
                names=list(spec.names),  # the class check; single_cls keeps every box as 'item'
                cache=cfg.cache or None,
                cache_budget_mb=cfg.cache_budget_mb,
                single_cls=cfg.single_cls,
                seed=cfg.seed,
            )
            if cfg.rect:
                LOGGER.warning("rect: training batches keep the images sorted by aspect: no shuffle, no mosaic")
            train = YoloDataset(
                spec.splits["train"],
                augment=True,
                hyp=cfg.hyp(),
                rect=cfg.rect,
                batch_size=cfg.batch_size,
                user_transform=cfg.augment,
                stride=MAX_STRIDE,
                **common,
            )
            val = validation_split(spec.splits["val"], rect=cfg.rect_val, batch_size=cfg.batch_size * 2, **common)
        for split, dataset in (("train", train), ("val", val)):
            LOGGER.info("%s", report_summary(split, dataset.report))
        return RunData(train, val, spec)

    def build_dataloaders(self, data: RunData) -> RunLoaders:
        """The train loader (through an `ImageWeightSampler` with `--image-weights`) and this rank's val loader."""
        cfg = self.cfg
        sampler = ImageWeightSampler(data.train, seed=cfg.seed) if cfg.image_weights else None
        pin = self.accelerator.device.type == "cuda"  # page-locked batches: asynchronous host-to-GPU copies
        train = build_dataloader(
            data.train,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            shuffle=True,
            seed=cfg.seed,
            sampler=sampler,
            pin_memory=pin,
        )
        shard = {"num_shards": self.accelerator.num_processes, "shard": self.accelerator.process_index}
        val = validation_loader(data.val, cfg.batch_size * 2, cfg.workers, seed=cfg.seed, pin_memory=pin, **shard)
        return RunLoaders(train, val, sampler)

    # ------------------------------------------------------------------------------------ configuration

    def total_batch(self) -> int:
        """Images per forward pass over all processes (batch_size is per process)."""
        return self.cfg.batch_size * self.accelerator.num_processes

    def resolve_config(self, data: RunData, names: list[str]) -> TrainConfig:
        """The configuration made concrete once the data is known; what args.yaml and the checkpoints record,
        so a resumed run rebuilds the same. Here `optimizer: auto` (`optim.auto_optimizer`)."""
        cfg = self.cfg
        if cfg.optimizer.lower() != "auto":
            if cfg.optimizer.lower() not in {name.lower() for name in OPTIMIZERS}:
                raise ConfigError(
                    f"'optimizer' must be auto or one of {', '.join(OPTIMIZERS)} (any case), got {cfg.optimizer!r}."
                )
            return cfg
        steps = math.ceil(len(data.train) / max(self.total_batch(), cfg.nbs)) * cfg.epochs
        name, lr0, momentum, bias_lr = auto_optimizer(len(names), steps, cfg.lr0, cfg.momentum, cfg.warmup_bias_lr)
        LOGGER.info("optimizer: auto -> %s (lr0 %g, momentum %g) for about %d optimizer steps", name, lr0, momentum,
                    steps)  # fmt: skip
        return dataclasses.replace(cfg, optimizer=name, lr0=lr0, momentum=momentum, warmup_bias_lr=bias_lr)

    # ------------------------------------------------------------------------------------ model and objective

    def model_keywords(self, data: RunData) -> dict[str, Any]:
        """Extra `build_model` keywords: the recipe's `anchors` (the multi-task experiment adds `seg_classes`)."""
        return {"anchors": self.cfg.anchors} if self.cfg.anchors else {}

    def build_model(self, data: RunData, names: list[str]) -> torch.nn.Module:
        """The registered model for the classes; `--weights` transferred, layers frozen, and the family's own
        preparation (autoanchor for anchor-based models) on a fresh run."""
        cfg = self.cfg
        try:
            model = build_model(cfg.model, nc=len(names), **self.model_keywords(data))
        except ValueError as exc:
            raise ConfigError(f"'model' {cfg.model!r} / 'anchors': {exc}") from exc
        if cfg.weights and self.resume_from is None:
            source_state = weights_for_fine_tuning(cfg.weights, cfg.model)  # a bundle, a .pt, a folder or Hub id
            moved, total = transfer_weights(model, source_state)
            LOGGER.info("weights: transferred %d/%d tensors from %s", moved, total, cfg.weights)
        if cfg.freeze:
            layers, backbone = len(model.stages()), len(model.backbone.stages)
            if cfg.freeze > layers:
                raise ConfigError(
                    f"'freeze' = {cfg.freeze}, but {cfg.model} has {layers} layers ({backbone} backbone stages, "
                    f"then neck blocks); pass at most {layers} ({backbone} freezes the backbone)."
                )
            LOGGER.info("freeze: %d parameter tensors frozen", len(freeze_layers(model, cfg.freeze)))
        if cfg.sync_bn:
            model = convert_sync_batchnorm(model, self.accelerator)
        if self.resume_from is None and not cfg.noautoanchor:
            family_of(model).prepare_for_training(
                model, data.train.labels, data.train.shapes, cfg.imgsz, cfg.hyp(), cfg.seed
            )
        return model

    def build_objective(self, model: torch.nn.Module, data: RunData, names: list[str]) -> Objective:
        """The run's objective: `total, items = objective(model, batch, images)`, `.names` for `items`; here the
        detection loss of the model's family. A task or added terms wrap or replace it
        (`accelyolo.losses.objective`); a plain detection loss `(preds, targets)` that a user's step returns
        is wrapped as one by `build`."""
        return DetectionObjective(family_of(model).build_loss(model, self.cfg.hyp(), self.cfg.imgsz))

    # ------------------------------------------------------------------------------------ optimisation

    def build_optimizer(self, model: torch.nn.Module, objective: Objective) -> torch.optim.Optimizer:
        """YOLO's three parameter groups over `model`, weight decay scaled to the nominal batch."""
        cfg, total = self.cfg, self.total_batch()
        weight_decay = scaled_weight_decay(cfg.weight_decay, total, accumulate_steps(cfg.nbs, total), cfg.nbs)
        fused = self.accelerator.device.type == "cuda"  # on CPU the foreach kernels, as before
        return build_optimizer(cfg.optimizer, model, cfg.lr0, cfg.momentum, weight_decay, fused=fused)

    def build_scheduler(
        self, optimizer: torch.optim.Optimizer, schedule: YoloSchedule
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """The LR scheduler over the prepared optimizer, stepped once per optimizer step (`optim.build_scheduler`)."""
        cfg = self.cfg
        try:
            return build_scheduler(cfg.scheduler, optimizer, schedule, cfg.scheduler_args)
        except (TypeError, ValueError) as error:  # torch refuses a value of scheduler_args
            raise ConfigError(f"'scheduler_args' {cfg.scheduler_args} do not make a {cfg.scheduler}: {error}") from None

    # ------------------------------------------------------------------------------------ evaluation and records

    def build_evaluator(self, loaders: RunLoaders, data: RunData, names: list[str]) -> Any:
        """What validates the EMA model: an object with `evaluate(model)` (and, optionally, `set_epoch(epoch)`
        before each validation and `restore(last_metrics)` on resume) returning a result with `as_dict()`."""
        cfg = self.cfg
        return DetectionValidator(
            loaders.val,
            self.accelerator,
            names,
            conf_thres=cfg.conf_thres,
            iou_thres=cfg.iou_thres,
            max_det=cfg.max_det,
            channels_last=cfg.channels_last,
        )

    def metric_columns(self, metrics: dict[str, float] | None) -> dict[str, Any]:
        """The results.csv metric columns and fitness of a validation (`None`: an epoch not validated); a
        task that measures more adds its columns."""
        keys = ("precision", "recall", "mAP50", "mAP50-95")
        row: dict[str, Any] = {f"metrics/{k}": metrics[k] if metrics else None for k in keys}
        row["metrics/max_score"] = metrics.get("max_score") if metrics else None
        row["fitness"] = metrics["fitness"] if metrics else None
        return row

    def checkpoint_extras(self, data: RunData) -> dict[str, Any]:
        """Metadata every checkpoint of the run records beside the trainer's (a task adds its class names)."""
        spec = data.spec
        if spec is not None and spec.category_ids is not None and not self.cfg.single_cls:
            return {"category_ids": spec.category_ids}  # the classes are a COCO file's categories
        return {}

    def build_callbacks(self, run_dir: Path) -> list[Callback]:
        """The run's own callbacks (the user's come after them)."""
        return [
            ProgressCallback(),
            CSVLogger(run_dir / "results.csv"),
            TrackerCallback(),
            PlotsCallback(),
            TrackerImagesCallback(),
            ResultsPlotCallback(),
            HubPushCallback(),
        ]
