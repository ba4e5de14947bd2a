"""The training loop on Accelerate, readable top to bottom, with one seam per part.

`Trainer` keeps the loop; an experiment (`accelyolo.training.experiment.Experiment`, or the subclass `fit(experiment=)`
and the options combine) builds every part of the run (datasets, loaders, model, objective, optimizer,
scheduler, evaluator, callbacks) and hands them over as one frozen `RunParts`. Each batch goes through one
`train_step(batch) -> StepOutput`, the typed record the epoch loop and the callbacks share; what a
checkpoint saves and restores of the run's progress is one `RunState`.

`Accelerator` owns the device, mixed precision and DDP. Gradient accumulation is done here, not by
Accelerate's `accumulate()`: YOLO's nominal batch (64) needs an accumulation count that ramps from 1
during warmup, which Accelerate's fixed `gradient_accumulation_steps` cannot express, and YOLO sums the
loss over the accumulated micro-batches rather than averaging it (the LR values of the hyp files assume
that). So micro-batches that do not end an accumulation window run under `accelerator.no_sync(model)`,
the loss is multiplied by the world size (DDP averages gradients, YOLO wants their sum over the global
batch), and an optimizer step is forced at the end of every epoch, so that each epoch starts with empty
gradients and a run resumed at an epoch boundary takes exactly the steps of one never stopped.

When the optimizer steps, and with which LR and momentum, are pure functions of the global iteration
(`optim.YoloSchedule`); the scheduler object (`optim.YoloScheduler`, or a torch scheduler a recipe
names) is stepped once per optimizer step and is not passed to `accelerator.prepare`, which would step
it once per process. Epochs are 1-based everywhere a person sees them (console, results.csv, checkpoint
metadata, `FitResult`); `RunState.epoch` is the number of epochs completed.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import gather_object, set_seed

from accelyolo import __version__
from accelyolo.core.config import TrainConfig, save_config
from accelyolo.core.defaults import MAX_STRIDE, stride_multiple
from accelyolo.core.errors import AccelyoloError
from accelyolo.core.failure import close_process_group_at_exit, share_failure
from accelyolo.core.logs import setup_logging
from accelyolo.core.memory import give_back_freed_memory, retain_freed_memory
from accelyolo.core.rng import capture_rng_state, restore_rng_state, use_deterministic_algorithms
from accelyolo.core.runs import make_run_dir
from accelyolo.core.threads import use_available_cores
from accelyolo.data import to_model_input
from accelyolo.data.loader import ImageWeightSampler, class_maps, start_next_pass
from accelyolo.losses.objective import Objective
from accelyolo.training.callbacks import Callback, write_results_csv
from accelyolo.training.ema import ModelEMA
from accelyolo.training.experiment import Experiment
from accelyolo.training.optim import YoloSchedule, accumulate_steps, match_parameter_layout, warmup_iterations
from accelyolo.training.records import FitResult, RunData, RunLoaders, RunParts, RunState, StepOutput
from accelyolo.training.run_weights import RunWeights
from accelyolo.training.trackers import chosen_trackers, tracker_init_kwargs
from accelyolo.weights.checkpoint import CheckpointError, load_checkpoint_bundle

LOGGER = logging.getLogger("accelyolo")

MAX_NONFINITE_IN_A_ROW = 10


@contextmanager
def bundle_must_fit(path: Path | None) -> Iterator[None]:
    """A resumed bundle whose saved state does not fit the run its own options build (a damaged or edited
    file) ends in a `CheckpointError` naming the file, not in a traceback from inside torch."""
    try:
        yield
    except (AccelyoloError, torch.cuda.OutOfMemoryError):
        raise
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
        detail = " ".join(f"{type(error).__name__}: {error}".split())  # torch's messages span lines
        raise CheckpointError(
            path,
            f"its saved state does not fit the run its options describe ({detail[:300]})",
            "Resume from a run's own weights/last.safetensors, or train anew from its weights with --weights",
        ) from None


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive non-finite losses."""


def fresh_accelerator(**kwargs: Any) -> Accelerator:
    """An `Accelerator` for this run, forgetting the precision settings of an earlier `fit()` in this process.

    Accelerate keeps its state in a process-wide singleton and refuses a second `Accelerator` with other
    settings ("AcceleratorState has already been initialized and cannot be changed"); a notebook calling
    `fit(mixed_precision="no")` and then `fit(mixed_precision="bf16")` needs the reset. The process group
    (DDP) is kept. This is the only place accelyolo touches Accelerate's private state.
    """
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(**kwargs)
    close_process_group_at_exit()
    return accelerator


def ineligible_reason(warmup_over: bool, max_score: float | None, min_score: float) -> str:
    """Why a validated model may not become `best` (DESIGN decision 20: a model someone can deploy), or "".

    A model validated before the warm-up ended is not taken, whatever its fitness: at the warm-up's low LR a
    model can rank boxes well while scoring them all near 0 (a yolov8n run's epoch 1: mAP50-95 0.152 at the
    validation's conf 0.001, above every later epoch but the last, with no score above 0.013). A model whose
    highest score over the whole validation set is below `min_score` (predict's default conf) would detect
    nothing where it is used. `max_score` None (an evaluator that does not report it) skips that check.
    """
    if not warmup_over:
        return "validated before the warm-up ended"
    if max_score is not None and max_score < min_score:
        return f"its highest score on the validation set, {max_score:.4g}, is below best_min_score {min_score:g}"
    return ""


class Trainer:
    """One training run: `fit()` = `setup()`, the epoch loop, `finish()`; `close()` however it ends."""

    compile_backend = "inductor"  # torch.compile backend of `--compile`

    def __init__(
        self,
        cfg: TrainConfig,
        callbacks: list[Callback] | None = None,
        experiment: type[Experiment] = Experiment,
        resume_from: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.resume_from = resume_from
        self.user_callbacks = list(callbacks or [])
        self.experiment_class = experiment  # `setup` builds the run's parts with it
        self.state = RunState()
        self.callbacks: list[Callback] = []
        self.trackers_started = False
        self.iteration = 0  # global batch index of the current / next batch
        self.last_step_iteration = -1  # iteration of the last optimizer step (-1: none yet)
        self._window_has_grads = False
        self.last_validation: Any = None  # the last validation's whole result (a task's, with its own metrics)
        self._stop_aug_improved = False  # this epoch's validation set a new best_stop_aug
        self._val_workers_started = False  # the validation loader's persistent workers exist (start_val_workers)
        self.parts: RunParts | None = None  # what the experiment built (setup); data, loaders, names, loss_fn read it
        self._scale: float | None = None  # the GradScaler's scale after the last optimizer step (fp16)

    # ------------------------------------------------------------------------------------ fit

    def fit(self) -> FitResult:
        """Set up, then train epoch after epoch, validating and saving; returns the run's summary."""
        try:
            self.setup()
            self.fire("on_fit_start")
            stopped_early = self.train_epochs()
            return self.finish(stopped_early)
        except Exception as error:  # under DDP: one message for the run, every process ends (accelyolo.core.failure)
            failure = share_failure(error)
            if failure is error:
                raise
            raise failure from error
        finally:
            self.close()

    def train_epochs(self) -> bool:
        """The epoch loop; True when early stopping (patience) ended it."""
        cfg = self.cfg
        self.start_val_workers()
        for epoch in range(self.state.epoch + 1, cfg.epochs + 1):
            row = self.train_one_epoch(epoch)
            if row is None:  # a stop asked during the epoch: the last checkpoint stays at the epoch before
                return False
            improved = False
            if self.should_validate(epoch):
                metrics = self.validate().as_dict()
                why_not = self.why_not_best(epoch, metrics)
                improved = self.update_best(epoch, metrics, why_not)
                row.update(self.metric_columns(metrics))
                row["best_eligible"] = int(not why_not)
            self.state.epoch = epoch
            self.state.history.append(dict(row))  # saved with the checkpoint, before results.csv gets the row
            self.save(epoch, improved)
            self.fire("on_epoch_end", row)
            if self.patience_exhausted(epoch):
                LOGGER.info(
                    "early stopping: no improvement for %d epochs (best epoch %d).", cfg.patience, self.state.best_epoch
                )
                return True
            if self.accelerator.check_trigger():
                return False
        return False

    def start_val_workers(self) -> None:
        """Fork the validation loader's persistent workers now, as the training loader forks its own, instead
        of at the first validation. A forked worker shares its parent's pages copy-on-write: each page the
        trainer writes afterwards is copied once, so a fork in mid-run (the trainer then holds its optimizer
        state and retained step memory) cost ~80,000 page copies, ~0.3 s, in the next epoch's first steps; forked
        beside the training workers, before any step, those copies are made once for both. The batches the
        workers prepare meanwhile are dropped by the first validation's reset (a few letterboxed batches).
        Memory the trainer keeps free for its steps (`retain_memory`) is given back first: the workers would
        share it and the kernel would count it in each of them."""
        if self.val_loader.num_workers > 0 and not self._val_workers_started:
            give_back_freed_memory()
            iter(self.val_loader)
            self._val_workers_started = True

    def metric_columns(self, metrics: dict[str, float] | None) -> dict[str, Any]:
        """The results.csv metric columns and fitness of a validation (`None`: an epoch not validated), as
        the experiment's tasks name them (`Experiment.metric_columns`)."""
        return self.experiment.metric_columns(metrics)

    def patience_exhausted(self, epoch: int) -> bool:
        """Early stopping: `patience` epochs without improvement by the end of `epoch`, counted from the best
        eligible epoch (`why_not_best`): a run with none yet does not stop early."""
        patience, best = self.cfg.patience, self.state.best_epoch
        return bool(patience and best and epoch - best >= patience)

    def should_validate(self, epoch: int) -> bool:
        """The last epoch always; with `val_final_only` nothing else; else every `val_interval` epochs,
        and every epoch inside the last `heavy_eval_range` (YOLOv6 validates every 3rd there; we take each,
        since the end of training is where best.safetensors is decided)."""
        cfg = self.cfg
        if epoch == cfg.epochs:
            return True
        if cfg.val_final_only:
            return False
        return epoch % cfg.val_interval == 0 or epoch > cfg.epochs - cfg.heavy_eval_range

    def strong_augmentation(self, epoch: int) -> bool:
        """Whether mosaic (and with it mixup) is on in `epoch`: off for the last `close_mosaic` epochs."""
        return epoch <= self.cfg.epochs - self.cfg.close_mosaic

    def why_not_best(self, epoch: int, metrics: dict[str, float]) -> str:
        """Why the model validated at the end of `epoch` may not become `best`, `best_stop_aug` or patience's
        best, or "" when it may (`ineligible_reason`). A function of the epoch, the schedule and the metrics
        only, so a resumed run judges each epoch as the run never stopped would."""
        return ineligible_reason(self.schedule.warmup_over_by(epoch), metrics.get("max_score"), self.cfg.best_min_score)

    def update_best(self, epoch: int, metrics: dict[str, float], why_not: str | None = None) -> bool:
        """Record the epoch's metrics; True when the epoch is eligible (`why_not` empty; None: ask
        `why_not_best`) and its fitness the best so far. Also tracks the best eligible epoch after strong
        augmentation stopped (`best_stop_aug`, YOLOv6), which `save` writes when it improves."""
        state = self.state
        state.last_metrics = metrics
        self._stop_aug_improved = False
        why_not = self.why_not_best(epoch, metrics) if why_not is None else why_not
        if why_not:
            LOGGER.info("epoch %d: not eligible for best: %s", epoch, why_not)
            return False
        if not self.strong_augmentation(epoch) and metrics["fitness"] > state.best_stop_aug_fitness:
            state.best_stop_aug_fitness, state.best_stop_aug_epoch = metrics["fitness"], epoch
            self._stop_aug_improved = True
        if metrics["fitness"] <= state.best_fitness:
            return False
        state.best_fitness, state.best_epoch, state.best_metrics = metrics["fitness"], epoch, metrics
        return True

    def unwrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` without Accelerate's wrappers (DDP, and torch.compile's under `--compile`): the module whose
        state dict has the plain parameter names a checkpoint stores."""
        return self.accelerator.unwrap_model(module, keep_torch_compile=False)

    def request_stop(self) -> None:
        """Ask every rank to stop after the current step (callable from a callback on any one rank)."""
        self.accelerator.set_trigger()

    def fire(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    # ------------------------------------------------------------------------------------ set-up

    def setup(self) -> None:
        """Accelerator, then the experiment's parts (`Experiment.build`), the model's saved state on resume,
        prepare, schedule, scheduler, EMA; restores a resumed run; then the run folder, made only once all of
        these are known to be good (a mistake leaves none behind), whose results.csv a resume rewrites from
        the checkpoint's rows."""
        cfg = self.cfg
        self.accelerator = accelerator = self.build_accelerator()
        self.threads_line = use_available_cores(accelerator.device)  # before any work or loader worker
        if cfg.retain_memory and accelerator.device.type == "cpu":
            retain_freed_memory()  # before the loader workers fork: they inherit it
        setup_logging(main_process=accelerator.is_main_process)
        set_seed(cfg.seed, device_specific=True)  # seed + rank: ranks draw different augmentations
        if cfg.deterministic:
            use_deterministic_algorithms()
        experiment = self.experiment_class(cfg, accelerator, self.resume_from)
        bundle = load_checkpoint_bundle(self.resume_from) if self.resume_from else None
        self.parts = parts = experiment.build()
        self.experiment = experiment.with_config(parts.cfg)
        self.cfg = cfg = parts.cfg
        self.train_loader, self.val_loader = parts.loaders.train, parts.loaders.val  # prepare() wraps train_loader
        model = parts.model
        if bundle is not None:
            with bundle_must_fit(self.resume_from):
                model.load_state_dict(bundle.model_state)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.optimizer, self.train_loader = accelerator.prepare(model, parts.optimizer, self.train_loader)
        self.loss_fn.prepare(accelerator, self.unwrap(self.model))
        self.batches_per_epoch = len(self.train_loader)
        if cfg.max_steps_per_epoch:
            self.batches_per_epoch = min(self.batches_per_epoch, cfg.max_steps_per_epoch)
        self.schedule = self.build_schedule()
        self.scheduler = self.experiment.build_scheduler(self.optimizer, self.schedule)
        self.ema = ModelEMA(self.unwrap(self.model), decay=cfg.ema_decay, tau=cfg.ema_tau)
        self.evaluator = parts.evaluator
        if bundle is not None:
            with bundle_must_fit(self.resume_from):
                self.restore(bundle)
        self.make_run_dir(bundle is not None)
        self.callbacks = [*self.experiment.build_callbacks(self.run_dir), *self.user_callbacks]
        self.start_trackers()
        self.describe()

    def make_run_dir(self, resumed: bool) -> None:
        """The run folder with its args.yaml and data report (a resume rewrites results.csv from its rows)."""
        accelerator = self.accelerator
        self.run_dir = make_run_dir(accelerator, Path(self.cfg.project) / self.cfg.name, self.cfg.exist_ok,
                                    self.resume_from)  # fmt: skip
        self.weights = RunWeights(self.run_dir / "weights", self.cfg.save_period, self.cfg.save_last_n)
        if accelerator.is_main_process:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "args.yaml")
            self.write_data_report(self.run_dir / "data_report.json")
            if resumed:
                write_results_csv(self.run_dir / "results.csv", self.state.history, self.state.epoch)

    def build_accelerator(self) -> Accelerator:
        kwargs: dict[str, Any] = {}
        if self.cfg.mixed_precision:
            kwargs["mixed_precision"] = self.cfg.mixed_precision
        if self.cfg.compile:  # prepare() then wraps the (DDP) model in torch.compile, as Accelerate orders them
            kwargs["dynamo_backend"] = self.compile_backend
        return fresh_accelerator(
            # non_blocking: on a GPU the next batch's copy from pinned memory overlaps the step (a no-op on CPU)
            dataloader_config=DataLoaderConfiguration(
                use_seedable_sampler=True, data_seed=self.cfg.seed, non_blocking=True
            ),
            log_with=chosen_trackers(self.cfg.log_with),
            project_dir=self.cfg.project,  # trackers write to <project>/<run name>: the run folder
            **kwargs,
        )

    @property
    def data(self) -> RunData | None:
        return self.parts.data if self.parts is not None else None

    @property
    def loaders(self) -> RunLoaders | None:
        return self.parts.loaders if self.parts is not None else None

    @property
    def names(self) -> list[str]:
        return self.parts.names

    @property
    def loss_fn(self) -> Objective | None:
        """The run's objective (`parts.objective`); None before `setup`."""
        return self.parts.objective if self.parts is not None else None

    @property
    def last_result(self) -> Any:
        """The detection part of the last validation (the whole result unless a task measures more): what the
        plots, tables and image weights read."""
        return getattr(self.last_validation, "detection", self.last_validation)

    @property
    def weights_dir(self) -> Path:
        return self.weights.folder

    @property
    def train_dataset(self) -> Any:
        return self.data.train

    @property
    def val_dataset(self) -> Any:
        return self.data.val

    @property
    def data_spec(self) -> Any:
        """The data.yaml read (`DataSpec`); None for datasets an experiment made otherwise."""
        return self.data.spec

    @property
    def image_sampler(self) -> ImageWeightSampler | None:
        """The `--image-weights` sampler (None without it, or before `setup`)."""
        return self.loaders.image_sampler if self.loaders is not None else None

    def write_data_report(self, path: Path) -> None:
        """Every split's check counts and each skipped file and dropped or repaired label row (file, line,
        reason), as JSON; datasets without a `report` (ones an experiment made otherwise) are left out."""
        splits = {
            split: dataset.report
            for split, dataset in (("train", self.train_dataset), ("val", self.val_dataset))
            if isinstance(getattr(dataset, "report", None), dict)
        }
        if splits:
            path.write_text(json.dumps({"data": self.cfg.data, "splits": splits}, indent=1))
            LOGGER.info("data: every skipped file and dropped label row is listed in %s", path)

    def build_schedule(self) -> YoloSchedule:
        """When the optimizer steps and at which LR/momentum: pure functions of the global iteration."""
        cfg = self.cfg
        warmup = warmup_iterations(cfg.warmup_epochs, self.batches_per_epoch, cfg.warmup_min_iters, cfg.epochs)
        return YoloSchedule(
            lr0=cfg.lr0,
            lrf=cfg.lrf,
            kind="cosine" if cfg.cos_lr else "linear",
            epochs=cfg.epochs,
            batches_per_epoch=self.batches_per_epoch,
            warmup_iters=warmup,
            warmup_bias_lr=cfg.warmup_bias_lr,
            warmup_momentum=cfg.warmup_momentum,
            momentum=cfg.momentum,
            nbs=cfg.nbs,
            total_batch=self.experiment.total_batch(),
        )

    def restore(self, bundle: Any) -> None:
        """Optimizer, EMA, scaler, scheduler, RNG and run state (results rows included) of a resumed run."""
        meta = bundle.metadata
        self.optimizer.load_state_dict(bundle.optimizer_state)
        match_parameter_layout(self.optimizer)
        if bundle.ema_state:
            self.ema.load_state_dict(bundle.ema_state)
        self.state = RunState.from_metadata(meta, bundle.format_version)
        self.ema.updates = self.state.ema_updates
        if self.accelerator.scaler is not None and bundle.scaler_state:
            self.accelerator.scaler.load_state_dict(bundle.scaler_state)
            self._scale = None  # read again before the next step
        self.iteration = self.state.epoch * self.batches_per_epoch
        self.last_step_iteration = self.iteration - 1  # every epoch ends with a step
        if self.image_sampler is not None and meta.get("class_maps") is not None:
            self.image_sampler.set_class_maps(meta["class_maps"])
        if isinstance(meta.get("scheduler"), dict):
            self.scheduler.load_state_dict(meta["scheduler"])
        else:  # a bundle from before the scheduler was saved: the step count follows from the schedule
            self.scheduler.load_state_dict({"last_epoch": self.schedule.steps_before(self.iteration)})
        self.loss_fn.load_extra_state(bundle.extra_state or {}, bundle.path)
        if hasattr(self.evaluator, "restore"):
            self.evaluator.restore(self.state.last_metrics)
        rank = self.accelerator.process_index
        if bundle.rng_states and rank < len(bundle.rng_states):
            restore_rng_state(bundle.rng_states[rank])
        LOGGER.info("resuming %s from epoch %d", self.resume_from, self.state.epoch + 1)

    def start_trackers(self) -> None:
        if self.accelerator.log_with:
            self.accelerator.init_trackers(
                self.run_dir.name, config=self.cfg.to_dict(), init_kwargs=tracker_init_kwargs(self.run_dir)
            )
            self.trackers_started = True

    def describe(self) -> None:
        cfg, accelerator = self.cfg, self.accelerator
        LOGGER.info(
            "world size %d (%s, mixed precision %s, device %s)",
            accelerator.num_processes,
            accelerator.distributed_type.value,
            accelerator.mixed_precision,
            accelerator.device,
        )
        LOGGER.info("%s", self.threads_line)
        LOGGER.info(
            "training %s on %s for epochs %d..%d: %d batches/epoch, global batch %d, accumulate %d, run folder %s",
            cfg.model,
            cfg.data or "the demo data",
            self.state.epoch + 1,
            cfg.epochs,
            self.batches_per_epoch,
            self.schedule.total_batch,
            accumulate_steps(cfg.nbs, self.schedule.total_batch),
            self.run_dir,
        )
        if cfg.mosaic > 0 and cfg.close_mosaic >= cfg.epochs and accelerator.is_main_process:
            LOGGER.warning(
                "close_mosaic %d >= epochs %d: mosaic (and mixup) stay off for the whole run; set close_mosaic "
                "below epochs to train with mosaic first, or mosaic 0 to silence this.",
                cfg.close_mosaic,
                cfg.epochs,
            )
        if self.state.epoch >= cfg.epochs:
            LOGGER.warning(
                "resume: the run in %s already finished %d epochs of %d; pass a larger --epochs to train it further.",
                self.run_dir,
                self.state.epoch,
                cfg.epochs,
            )

    # ------------------------------------------------------------------------------------ epoch

    def train_one_epoch(self, epoch: int) -> dict[str, Any] | None:
        """Train one epoch (1-based); its results.csv row, or None when a stop was asked during it."""
        self.model.train()
        self.loss_fn.start_epoch(epoch, self.cfg.epochs)
        strong = self.strong_augmentation(epoch)
        if not strong and (epoch == 1 or self.strong_augmentation(epoch - 1)):
            LOGGER.info("epoch %d: strong augmentation (mosaic, mixup) off from here on (close_mosaic)", epoch)
        self.set_epoch_data(epoch)  # already done, with the loading started, when the last epoch ran ahead
        self.fire("on_epoch_start", epoch)
        names = list(self.loss_fn.names)
        loss_sum, counted, nonfinite_run = torch.zeros(len(names)), 0, 0
        self.optimizer.zero_grad(set_to_none=True)
        last_lrs = [group["lr"] for group in self.optimizer.param_groups]
        t_epoch = t_data = time.perf_counter()
        for i, batch in enumerate(self.train_loader):
            if i >= self.batches_per_epoch:
                break
            if i == self.batches_per_epoch - 1:
                self.load_ahead(epoch + 1)
            self.iteration = (epoch - 1) * self.batches_per_epoch + i
            step = self.train_step(batch)
            step.epoch, step.batch, step.data_time_s = epoch, i, time.perf_counter() - t_data - step.step_time_s
            if step.finite:
                loss_sum += torch.tensor(list(step.losses.values()))
                counted, nonfinite_run = counted + 1, 0
            else:
                nonfinite_run += 1
                self._warn_nonfinite(epoch, i, nonfinite_run)
            step.mean_losses = dict(zip(names, (loss_sum / max(counted, 1)).tolist()))
            if step.optimizer_step:
                last_lrs = step.lrs
            self.fire("on_step_end", step)
            if self.accelerator.check_trigger():
                LOGGER.info("stop requested at epoch %d batch %d", epoch, i)
                return None
            t_data = time.perf_counter()
        self.report_unreadable(epoch)
        return self.epoch_row(epoch, names, loss_sum / max(counted, 1), last_lrs, time.perf_counter() - t_epoch)

    def set_epoch_data(self, epoch: int) -> None:
        """Point the training data at `epoch` (1-based): its augmentation randomness, mosaic on or off
        (`strong_augmentation`) and the samplers' order."""
        self.train_dataset.set_mosaic(self.strong_augmentation(epoch))
        self.train_dataset.set_epoch(epoch - 1)
        if self.image_sampler is not None:
            self.image_sampler.set_epoch(epoch - 1)
        self.train_loader.set_epoch(epoch - 1)

    def load_ahead(self, epoch: int) -> bool:
        """Called when the batch before `epoch` (the previous epoch's last) has arrived: the loader workers
        start on `epoch`'s batches now, while that batch trains and the validation runs
        (`data.loader.start_next_pass`); True when they did. Not with image weights (the next draw needs
        this epoch's validation), past the last epoch, or when an epoch stops short of the loader's end
        (`max_steps_per_epoch`). `on_epoch_start` callbacks therefore see an epoch whose first batches
        are already being built: a callback that changes the training data takes effect one epoch later."""
        if epoch > self.cfg.epochs or self.image_sampler is not None:
            return False
        if self.batches_per_epoch < len(self.train_loader):
            return False
        self.set_epoch_data(epoch)
        return start_next_pass(self.train_loader)

    def report_unreadable(self, epoch: int) -> None:
        """Warn with the count of training images that stopped decoding (replaced by other samples)."""
        unreadable = getattr(self.train_dataset, "unreadable_files", None)
        files = unreadable() if callable(unreadable) else []
        if files:
            rank = f" (rank {self.accelerator.process_index})" if self.accelerator.num_processes > 1 else ""
            shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
            LOGGER.warning(
                "epoch %d: %d image%s unreadable%s, replaced by other samples: %s",
                epoch,
                len(files),
                "s" * (len(files) != 1),
                rank,
                shown,
            )

    def train_step(self, batch: dict[str, Any]) -> StepOutput:
        """Forward, loss, backward for one batch at `self.iteration`; the optimizer step when one is due."""
        t0 = time.perf_counter()
        accelerator, ni = self.accelerator, self.iteration
        self.last_batch = batch
        step_now = self.schedule.is_step_iteration(ni, self.last_step_iteration)
        images = self.preprocess(batch)
        with nullcontext() if step_now else accelerator.no_sync(self.model):
            with accelerator.autocast():
                loss, items = self.compute_loss(batch, images)
            finite, host_items = self._check_loss(loss, items)
            if finite:
                accelerator.backward(loss * accelerator.num_processes)
                self._window_has_grads = True
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if step_now:
            self.optimizer_step()
            self.last_step_iteration = ni
        return StepOutput(
            epoch=0,
            batch=0,
            iteration=ni,
            losses=dict(zip(self.loss_fn.names, host_items.tolist())),
            finite=finite,
            optimizer_step=step_now,
            lrs=lrs,
            instances=int(batch["targets"].shape[0]),
            image_size=int(images.shape[-1]),
            batch_size=int(images.shape[0]),
            step_time_s=time.perf_counter() - t0,
            data_time_s=0.0,
        )

    def preprocess(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's uint8 images as model input (multi-scale resized when on)."""
        images = to_model_input(batch["images"], self.cfg.channels_last)
        if self.cfg.multi_scale:
            images = self._multi_scale(images, self.iteration)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)  # a no-op unless resized
        return images

    def compute_loss(self, batch: dict[str, Any], images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(total, items)` of one batch: the objective's (`Experiment.build_objective`), which runs the model."""
        return self.loss_fn(self.model, batch, images)

    def optimizer_step(self) -> None:
        """Clip, step (when the window holds a finite batch), update the EMA, advance the scheduler."""
        accelerator = self.accelerator
        if self._window_has_grads:
            if self.cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
            scale = self._scale_before_step()
            self.optimizer.step()
            if not self._step_was_skipped(scale):
                self.ema.update(self.model)  # unwraps it itself
                self.state.global_step += 1
        self.optimizer.zero_grad(set_to_none=True)
        self._window_has_grads = False
        self.scheduler.step()

    def _scale_before_step(self) -> float | None:
        """The GradScaler's scale the next optimizer step runs with (None without a scaler): the scale the
        last step left, read from the device once per step."""
        scaler = self.accelerator.scaler
        if scaler is not None and self._scale is None:
            self._scale = scaler.get_scale()
        return self._scale

    def _step_was_skipped(self, scale_before: float | None) -> bool:
        """Whether the GradScaler skipped the optimizer step just taken (an fp16 overflow). Accelerate tells
        by whether `optimizer.step` ran, and a fused optimizer's always runs (it skips inside its kernel);
        the scaler lowers its scale after a skipped step and only then, whichever the optimizer."""
        if scale_before is None:
            return False
        self._scale = self.accelerator.scaler.get_scale()
        return self._scale < scale_before

    def _multi_scale(self, images: torch.Tensor, ni: int) -> torch.Tensor:
        """Resize the batch to a size in [0.5, 1.5] x imgsz (a multiple of MAX_STRIDE), chosen from (seed, ni)."""
        rng = np.random.default_rng([self.cfg.seed, ni])
        low, high = int(self.cfg.imgsz * 0.5) // MAX_STRIDE, int(self.cfg.imgsz * 1.5) // MAX_STRIDE
        size = max(int(rng.integers(low, high + 1)) * MAX_STRIDE, MAX_STRIDE)
        factor = size / max(images.shape[2:])
        if factor == 1:
            return images
        new_shape = [stride_multiple(s * factor) for s in images.shape[2:]]
        return F.interpolate(images, size=new_shape, mode="bilinear", align_corners=False)

    def _check_loss(self, loss: torch.Tensor, items: torch.Tensor) -> tuple[bool, torch.Tensor]:
        """Whether the loss is finite on every rank (all ranks must skip together or none), and the loss
        items on the CPU; one device-to-host copy per step serves both."""
        flag = torch.isfinite(loss.detach()).all().to(torch.float32).reshape(1)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, "sum") / self.accelerator.num_processes
        host = torch.cat((flag, items.detach().float().reshape(-1))).cpu()
        return bool(host[0] == 1.0), host[1:]

    def _warn_nonfinite(self, epoch: int, i: int, run: int) -> None:
        LOGGER.warning("non-finite loss at epoch %d batch %d: step skipped (%d in a row)", epoch, i, run)
        if run >= MAX_NONFINITE_IN_A_ROW:
            raise NonFiniteLossError(
                f"{run} non-finite losses in a row at epoch {epoch}; training stopped. "
                f"The last good checkpoint is {self.weights.last}. Try a lower lr0, "
                "mixed_precision no/bf16 instead of fp16, or check the labels with `accelyolo data check`."
            )

    def epoch_row(
        self, epoch: int, names: list[str], mean: torch.Tensor, lrs: list[float], seconds: float
    ) -> dict[str, Any]:
        """The results.csv row of an epoch; the metric columns stay empty until validation fills them."""
        if self.accelerator.num_processes > 1:
            mean = self.accelerator.reduce(mean.to(self.accelerator.device), "mean").cpu()
        row: dict[str, Any] = {"epoch": epoch}
        row.update({f"train/{name}_loss": value for name, value in zip(names, mean.tolist())})
        row.update(self.metric_columns(None))
        row["best_eligible"] = None  # 1 or 0 once validated: whether the epoch may be best (`why_not_best`)
        row.update({f"lr/pg{j}": lr for j, lr in enumerate(lrs)})  # of the epoch's last optimizer step
        row["time_s"] = seconds
        return row

    # ------------------------------------------------------------------------------------ validate, save

    def validate(self) -> Any:
        """Validate a fused copy of the EMA model through the run's evaluator (each rank its shard, metrics on
        every rank); the result is kept as `last_validation`, its detection part (the whole result, unless a
        task measures more) as `last_result`, and `--image-weights` draws the next epoch from its per-class mAPs."""
        model = self.model_to_validate()
        if hasattr(self.evaluator, "set_epoch"):
            self.evaluator.set_epoch(self.state.epoch + 1)  # validate() runs before the epoch is counted
        self.last_validation = result = self.evaluator.evaluate(model)
        if self.image_sampler is not None:
            self.image_sampler.set_class_maps(self._shared(class_maps(self.last_result, len(self.names))))
        return result

    def model_to_validate(self) -> torch.nn.Module:
        """A fused copy of the EMA model (BatchNorm folded: the same outputs, ~15% faster)."""
        self.start_val_workers()  # already done by train_epochs, unless validate() is called on its own
        return copy.deepcopy(self.ema.ema).fuse()

    def _shared(self, value: Any) -> Any:
        """`value` as the main process has it (every rank draws from the same image weights)."""
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            value = broadcast_object_list([value], from_process=0)[0]
        return value

    def checkpoint_metadata(self) -> dict[str, Any]:
        self.state.ema_updates = self.ema.updates
        return {
            **self.state.to_metadata(),
            "scheduler": self.scheduler.state_dict(),
            "config": self.cfg.to_dict(),
            "names": self.names,
            "model": self.unwrap(self.model).config,
            "accelyolo_version": __version__,
            **({"class_maps": self.image_sampler.class_maps.tolist()} if self.image_sampler is not None else {}),
            **self.parts.checkpoint_extras,
        }

    def save(self, epoch: int, improved: bool) -> None:
        """Write last (and best / periodic) bundles (`RunWeights`); RNG states of every rank go into each."""
        accelerator = self.accelerator
        if self.cfg.nosave and epoch < self.cfg.epochs and not self.patience_exhausted(epoch):
            return  # --nosave: only the run's final checkpoint
        rng_states = [capture_rng_state()]
        if accelerator.num_processes > 1:
            rng_states = gather_object(rng_states)
        if accelerator.is_main_process:
            bundle = dict(
                model_state=self.unwrap(self.model).state_dict(),
                ema_state=self.ema.state_dict(),
                optimizer_state=self.optimizer.state_dict(),
                scaler_state=accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                rng_states=rng_states,
                metadata=self.checkpoint_metadata(),
                extra_state=self.loss_fn.extra_state() or None,  # the objective's own (distillation adapters)
            )
            stop_aug = self._stop_aug_improved and self.state.best_stop_aug_epoch == epoch
            self.weights.write(epoch, bundle, best=improved, best_stop_aug=stop_aug)
        accelerator.wait_for_everyone()

    # ------------------------------------------------------------------------------------ end

    def finish(self, stopped_early: bool) -> FitResult:
        """The inference file (EMA weights of best, else last), the end-of-run callbacks, the summary."""
        weights = self.weights
        best_epoch, best_metrics = self.state.best_epoch, self.state.best_metrics
        if not best_epoch and weights.last.exists():  # no eligible epoch: best is the last epoch's model
            best_epoch, best_metrics = self.state.epoch, self.state.last_metrics
            self.fall_back_to_last()
        if self.accelerator.is_main_process:
            weights.write_inference()
        self.accelerator.wait_for_everyone()
        self.fire("on_fit_end")
        if best_metrics:
            LOGGER.info("best epoch %d: %s", best_epoch, " ".join(f"{k}={v:.4f}" for k, v in best_metrics.items()))
        return FitResult(
            run_dir=self.run_dir,
            best_epoch=best_epoch,
            metrics=best_metrics,
            last_checkpoint=weights.last,
            best_checkpoint=weights.best if weights.best.exists() else None,
            inference_checkpoint=weights.inference if weights.inference.exists() else None,
            epochs_completed=self.state.epoch,
            stopped_early=stopped_early,
            history=list(self.state.history),
        )

    def fall_back_to_last(self) -> None:
        """No epoch was eligible for best (`why_not_best`): best.safetensors is the last epoch's model, and so
        is best_stop_aug.safetensors when the last epoch trained without strong augmentation. The log says why."""
        if not self.accelerator.is_main_process:
            return
        LOGGER.warning(
            "no epoch was eligible for best: each was validated before the warm-up ended, or scored below "
            "best_min_score %g everywhere, or was not validated (see the log and results.csv's best_eligible); "
            "weights/best.safetensors is the last epoch's model (epoch %d).",
            self.cfg.best_min_score,
            self.state.epoch,
        )
        self.weights.fall_back_to_last(stop_aug=not self.strong_augmentation(self.state.epoch))

    def close(self) -> None:
        """Close the progress display and the trackers, however the run ended (each callback's `close`), and
        release what the objective attached to the model."""
        errors: list[BaseException] = []
        if self.loss_fn is not None:
            try:
                self.loss_fn.close()
            except Exception as error:  # the callbacks still close
                errors.append(error)
        for callback in self.callbacks:
            try:
                callback.close(self)
            except Exception as error:  # one failing close must not keep the others open
                errors.append(error)
        if self.trackers_started:
            self.trackers_started = False
            self.accelerator.end_training()
        for error in errors:
            LOGGER.warning("closing a callback or the objective failed: %s", error)
