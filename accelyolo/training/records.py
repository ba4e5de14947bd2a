"""The records of a run. What its experiment builds for the trainer: the data (`RunData`), its loaders
(`RunLoaders`) and every part of the run (`RunParts`), frozen, so no build step writes an attribute. What
the training loop hands out: one per step (`StepOutput`), the run's progress that a checkpoint saves
(`RunState`), and what `fit()` returns (`FitResult`). Epochs are 1-based in all three."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunData:
    """What `Experiment.build_datasets` returns (a feature adds its own data in a subclass of this record).

    `spec` is the data.yaml read (`accelyolo.data.DataSpec`), None for datasets an experiment made otherwise;
    every dataset carries its class `names`.
    """

    train: Any
    val: Any
    spec: Any = None


@dataclass(frozen=True)
class RunLoaders:
    """What `Experiment.build_dataloaders` returns: the train and val loaders and, with `--image-weights`, the
    sampler whose class maps each validation refreshes (a feature adds its own loaders in a subclass)."""

    train: Any
    val: Any
    image_sampler: Any = None


@dataclass(frozen=True)
class RunParts:
    """What `Experiment.build` returns: every part of a run known before `accelerator.prepare`.

    `cfg` is the configuration resolved against the data (`optimizer: auto` made concrete, a teacher's path
    absolute): what args.yaml and the checkpoints record. `checkpoint_extras` is metadata each checkpoint
    records beside the trainer's (the segmentation classes, a COCO file's category ids).
    """

    cfg: Any  # TrainConfig
    data: RunData
    names: list[str]
    loaders: RunLoaders
    model: Any  # torch.nn.Module
    objective: Any  # accelyolo.losses.objective.Objective
    optimizer: Any  # torch.optim.Optimizer
    evaluator: Any
    checkpoint_extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class FitResult:
    """What `fit()` returns: where the run lives and how its best epoch scored (epochs 1-based)."""

    run_dir: Path
    best_epoch: int
    metrics: dict[str, float]
    last_checkpoint: Path
    best_checkpoint: Path | None
    inference_checkpoint: Path | None
    epochs_completed: int
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StepOutput:
    """One training batch, as `train_step` returns it and `Callback.on_step_end` receives it."""

    epoch: int  # 1-based
    batch: int  # index within the epoch
    iteration: int  # global batch index since the start of training
    losses: dict[str, float]  # this batch's loss items (the non-finite ones included)
    finite: bool  # the loss was finite on every rank; otherwise nothing was back-propagated
    optimizer_step: bool  # an optimizer step was due at this batch (taken unless no finite batch fed it)
    lrs: list[float]  # LR of each parameter group in effect for this batch
    instances: int  # labelled boxes in the batch
    image_size: int  # training size of the batch (multi-scale changes it)
    batch_size: int
    step_time_s: float  # forward, backward and (when due) optimizer step
    data_time_s: float  # waiting for the loader
    mean_losses: dict[str, float] = field(default_factory=dict)  # running mean of the epoch so far

    @property
    def images_per_s(self) -> float:
        return self.batch_size / max(self.step_time_s + self.data_time_s, 1e-9)


@dataclass
class RunState:
    """The run's progress: what a checkpoint saves and a resume restores (besides tensors)."""

    epoch: int = 0  # epochs completed
    global_step: int = 0  # optimizer steps taken
    best_fitness: float = -1.0
    best_epoch: int = 0  # 0 = no validation yet
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    ema_updates: int = 0
    best_stop_aug_fitness: float = -1.0  # best fitness after strong augmentation (mosaic, mixup) stopped
    best_stop_aug_epoch: int = 0
    # the results.csv row of each completed epoch, in order: a resume rewrites results.csv from these, so
    # the file agrees with the checkpoint however the run ended (see `callbacks.write_results_csv`)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_metadata(self) -> dict[str, Any]:
        out = asdict(self)
        out["metrics"] = out.pop("last_metrics")
        return out

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], format_version: int = 2) -> RunState:
        shift = 1 if format_version < 2 else 0  # format 1 counted epochs from 0
        best_epoch = int(meta.get("best_epoch", -1)) + shift
        return cls(
            epoch=int(meta["epoch"]) + shift,
            global_step=int(meta.get("global_step", 0)),
            best_fitness=float(meta.get("best_fitness", -1.0)),
            best_epoch=max(best_epoch, 0),
            best_metrics=dict(meta.get("best_metrics", {})),
            last_metrics=dict(meta.get("metrics", {})),
            ema_updates=int(meta.get("ema_updates", 0)),
            best_stop_aug_fitness=float(meta.get("best_stop_aug_fitness", -1.0)),
            best_stop_aug_epoch=int(meta.get("best_stop_aug_epoch", 0)),
            history=[dict(row) for row in meta.get("history", [])],  # none in bundles older than the rows
        )
