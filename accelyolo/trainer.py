"""The training loop on Accelerate, readable top to bottom.

`Accelerator` owns the device, mixed precision and DDP. Gradient accumulation is done here, not by
Accelerate's `accumulate()`: YOLO's nominal batch (64) needs an accumulation count that ramps from 1
during warmup, which Accelerate's fixed `gradient_accumulation_steps` cannot express, and YOLO sums the
loss over the accumulated micro-batches rather than averaging it (the LR values of the hyp files assume
that). So micro-batches that do not end an accumulation window run under `accelerator.no_sync(model)`,
the loss is multiplied by the world size (DDP averages gradients, YOLO wants their sum over the global
batch), and an optimizer step is forced at the end of every epoch, so that each epoch starts with empty
gradients and a run resumed at an epoch boundary takes exactly the steps of one never stopped.

LR, momentum and the accumulation count are computed from the global iteration (epoch x batches per
epoch + batch index), never kept in a scheduler object, so resuming lands on the same values.
"""

from __future__ import annotations

import copy
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object
from rich.console import Console

from accelyolo import __version__
from accelyolo.callbacks import Callback, CSVLogger, ProgressCallback, TrackerCallback
from accelyolo.checkpoint import (
    copy_checkpoint,
    load_checkpoint_bundle,
    read_checkpoint_metadata,
    save_checkpoint,
    strip_checkpoint,
)
from accelyolo.config import ConfigError, TrainConfig, config_from_dict, load_config, save_config
from accelyolo.data import YoloDataset, build_dataloader, demo_data_yaml, load_data_yaml
from accelyolo.ema import ModelEMA
from accelyolo.evaluation import evaluate
from accelyolo.losses import build_loss
from accelyolo.models import build_model, freeze_layers, transfer_weights
from accelyolo.optim import (
    accumulate_steps,
    build_optimizer,
    lr_factor,
    scaled_weight_decay,
    set_lr_momentum,
    warmup_iterations,
    warmup_values,
)
from accelyolo.rng import capture_rng_state, restore_rng_state, seed_everything
from accelyolo.runs import find_resume_checkpoint, increment_path, run_dir_of_checkpoint

LOGGER = logging.getLogger("accelyolo")

# Options that may change when a run is resumed; every other option comes from the checkpoint.
RESUME_CHANGEABLE = ("epochs", "workers", "patience", "log_with", "plots", "save_period", "resume",
                     "max_steps_per_epoch", "val_interval", "project")
MAX_NONFINITE_IN_A_ROW = 10


@dataclass
class FitResult:
    """What `fit()` returns: where the run lives and how its best epoch scored."""

    run_dir: Path
    best_epoch: int
    metrics: dict[str, float]
    last_checkpoint: Path
    best_checkpoint: Path | None
    inference_checkpoint: Path | None
    epochs_completed: int
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive non-finite losses."""


def fit(recipe: str | None = None, *, callbacks: list[Callback] | None = None, **overrides: Any) -> FitResult:
    """Train a YOLO model. `recipe` is a yaml path or shipped recipe name; keywords are `TrainConfig` fields.

    Example: `accelyolo.fit("demo", epochs=5)` or `accelyolo.fit(data="data.yaml", model="yolov8s")`.
    """
    resume = overrides.get("resume")
    if resume:
        cfg, checkpoint = config_for_resume(resume, overrides)
    else:
        cfg, checkpoint = load_config(recipe, **overrides), None
    return Trainer(cfg, callbacks=callbacks, resume_from=checkpoint).fit()


def config_for_resume(resume: str, overrides: dict[str, Any]) -> tuple[TrainConfig, Path]:
    """The resumed run's saved configuration, with the few options that may change applied."""
    refused = sorted(k for k in overrides if k.replace("-", "_") not in RESUME_CHANGEABLE)
    if refused:
        raise ConfigError(
            f"--resume continues a run with its saved options; these cannot change: {', '.join(refused)}. "
            f"Options that may change: {', '.join(RESUME_CHANGEABLE)}. To train anew from the weights, "
            "use --weights instead."
        )
    path = find_resume_checkpoint(resume, overrides.get("project", "runs/train"))
    saved = dict(read_checkpoint_metadata(path)["config"])
    saved.update({k.replace("-", "_"): v for k, v in overrides.items()})
    saved["resume"] = str(path)
    return config_from_dict(saved, {k: f"checkpoint {path}" for k in saved}), path


class Trainer:
    """Owns one training run: set-up, the epoch loop, validation and checkpoints."""

    def __init__(self, cfg: TrainConfig, callbacks: list[Callback] | None = None,
                 resume_from: Path | None = None) -> None:
        self.cfg = cfg
        self.resume_from = resume_from
        self.user_callbacks = list(callbacks or [])
        self.console = Console(soft_wrap=True)

    # ------------------------------------------------------------------------------------ set-up

    def _make_accelerator(self) -> Accelerator:
        if AcceleratorState._shared_state:
            # A previous fit() in this process: keep the process group, forget its precision settings.
            AcceleratorState._reset_state(reset_partial_state=False)
        kwargs: dict[str, Any] = {}
        if self.cfg.mixed_precision:
            kwargs["mixed_precision"] = self.cfg.mixed_precision
        return Accelerator(
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=self.cfg.seed),
            log_with=self._available_trackers(),
            **kwargs,
        )

    def _available_trackers(self) -> list[str] | None:
        if not self.cfg.log_with:
            return None
        from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

        checks = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available,
                  "mlflow": is_mlflow_available}
        wanted = list(checks) if self.cfg.log_with == "all" else self.cfg.log_with.split(",")
        chosen = []
        for name in wanted:
            name = name.strip()
            if name not in checks:
                raise ConfigError(f"'log_with': unknown tracker '{name}'; use tensorboard, wandb, mlflow or all.")
            if checks[name]():
                chosen.append(name)
            else:
                LOGGER.warning("tracker '%s' is not installed; skipping it (pip install %s)", name, name)
        return chosen or None

    def _setup_run_dir(self) -> Path:
        """The run folder: the resumed run's, or a new `project/name[N]` chosen by the main process."""
        if self.resume_from is not None:
            run_dir = run_dir_of_checkpoint(self.resume_from)
        else:
            run_dir = None
            if self.accelerator.is_main_process:
                run_dir = increment_path(Path(self.cfg.project) / self.cfg.name, self.cfg.exist_ok)
            if self.accelerator.num_processes > 1:  # every rank takes the main process's choice
                run_dir = gather_object([str(run_dir)])[0]
            run_dir = Path(run_dir)
        if self.accelerator.is_main_process:
            (run_dir / "weights").mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, run_dir / "args.yaml")
        return run_dir

    def _setup_data(self) -> None:
        cfg = self.cfg
        with self.accelerator.main_process_first():
            data_yaml = cfg.data or demo_data_yaml()
            self.data_spec = load_data_yaml(data_yaml)
            for split in ("train", "val"):
                if not self.data_spec.splits.get(split):
                    raise ConfigError(f"{self.data_spec.yaml_path}: the '{split}' split has no images.")
            self.names = ["item"] if cfg.single_cls else list(self.data_spec.names)
            common = dict(imgsz=cfg.imgsz, names=self.names, cache=cfg.cache or None, stride=32,
                          single_cls=cfg.single_cls, seed=cfg.seed)
            self.train_dataset = YoloDataset(self.data_spec.splits["train"], augment=True, hyp=cfg.hyp(),
                                             rect=False, batch_size=cfg.batch_size, **common)
            self.val_dataset = YoloDataset(self.data_spec.splits["val"], augment=False, hyp=None,
                                           rect=cfg.rect_val, batch_size=cfg.batch_size * 2, **common)
        self.train_loader = build_dataloader(self.train_dataset, batch_size=cfg.batch_size, workers=cfg.workers,
                                             shuffle=True, seed=cfg.seed)
        self.val_loader = build_dataloader(self.val_dataset, batch_size=cfg.batch_size * 2,
                                           workers=cfg.workers, shuffle=False, seed=cfg.seed)

    def _setup_model(self) -> torch.nn.Module:
        cfg = self.cfg
        model = build_model(cfg.model, nc=len(self.names))
        if cfg.weights and self.resume_from is None:
            bundle = load_checkpoint_bundle(cfg.weights)
            state = bundle.ema_state or bundle.model_state
            moved, total = transfer_weights(model, state)
            self._print(f"weights: transferred {moved}/{total} tensors from {cfg.weights}")
        if cfg.freeze:
            frozen = freeze_layers(model, cfg.freeze)
            self._print(f"freeze: {len(frozen)} parameter tensors frozen")
        if model.family == "anchor_based" and self.resume_from is None:
            from accelyolo.autoanchor import check_anchors

            report = check_anchors(model, self.train_dataset.labels, self.train_dataset.shapes, cfg.imgsz,
                                   thr=cfg.anchor_t, seed=cfg.seed)
            self._print(f"autoanchor: best possible recall {report['bpr_before']:.4f}"
                        + (f" -> {report['bpr_after']:.4f} (anchors replaced)" if report["replaced"] else ""))
        return model

    def _print(self, text: str) -> None:
        if self.accelerator.is_main_process:
            self.console.print(text)

    # ------------------------------------------------------------------------------------ fit

    def fit(self) -> FitResult:
        """Set up, then train epoch after epoch, validating and saving; returns the run's summary."""
        self._setup()
        cfg, accelerator = self.cfg, self.accelerator
        if self.start_epoch >= cfg.epochs and accelerator.is_main_process:
            LOGGER.warning("resume: the run in %s already finished %d epochs of %d; pass a larger --epochs "
                           "to train it further.", self.run_dir, self.start_epoch, cfg.epochs)
        history: list[dict[str, Any]] = []
        stopped_early = False
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, cfg.epochs):
            row = self.train_one_epoch(epoch)
            improved = False
            if (epoch + 1) % cfg.val_interval == 0 or epoch + 1 == cfg.epochs:
                self.last_result = self.validate()
                metrics = self.last_result.as_dict()
                row.update({f"metrics/{k}": metrics[k] for k in ("precision", "recall", "mAP50", "mAP50-95")})
                row["fitness"] = metrics["fitness"]
                improved = metrics["fitness"] > self.best_fitness
                if improved:
                    self.best_fitness, self.best_epoch, self.best_metrics = metrics["fitness"], epoch, metrics
            self.save(epoch, improved)
            history.append(row)
            for cb in self.callbacks:
                cb.on_epoch_end(self, row)
            if cfg.patience and self.best_epoch >= 0 and epoch - self.best_epoch >= cfg.patience:
                self._print(f"early stopping: no improvement for {cfg.patience} epochs "
                            f"(best epoch {self.best_epoch + 1}).")
                stopped_early = True
                break
            if self.stop_requested:
                break
        return self._finish(epoch, history, stopped_early)

    def _setup(self) -> None:
        """Accelerator, run folder, data, model, loss, optimizer, EMA; restores a resumed run's state."""
        cfg = self.cfg
        self.accelerator = accelerator = self._make_accelerator()
        seed_everything(cfg.seed + accelerator.process_index, cfg.deterministic)
        self.run_dir = self._setup_run_dir()
        self.weights_dir = self.run_dir / "weights"
        self.callbacks = [ProgressCallback(), CSVLogger(self.run_dir / "results.csv"), TrackerCallback(),
                          *self.user_callbacks]
        self._setup_data()
        model = self._setup_model()
        self.loss_fn = build_loss(model, box=cfg.box, cls=cfg.cls, dfl=cfg.dfl, obj=cfg.obj, cls_pw=cfg.cls_pw,
                                  obj_pw=cfg.obj_pw, anchor_t=cfg.anchor_t, fl_gamma=cfg.fl_gamma,
                                  label_smoothing=cfg.label_smoothing, imgsz=cfg.imgsz)

        self.total_batch = cfg.batch_size * accelerator.num_processes
        self.accumulate = accumulate_steps(cfg.nbs, self.total_batch)
        weight_decay = scaled_weight_decay(cfg.weight_decay, self.total_batch, self.accumulate, cfg.nbs)
        optimizer = build_optimizer(cfg.optimizer, model, cfg.lr0, cfg.momentum, weight_decay)

        self.start_epoch, self.best_fitness, self.best_epoch, self.global_step = 0, -1.0, -1, 0
        self.best_metrics: dict[str, float] = {}
        self.last_result = None
        self.stop_requested = False
        bundle = load_checkpoint_bundle(self.resume_from) if self.resume_from else None
        if bundle is not None:
            model.load_state_dict(bundle.model_state)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)

        model, optimizer, self.train_loader, self.val_loader = accelerator.prepare(
            model, optimizer, self.train_loader, self.val_loader)
        self.model, self.optimizer = model, optimizer
        self.ema = ModelEMA(accelerator.unwrap_model(model), decay=cfg.ema_decay, tau=cfg.ema_tau)
        if bundle is not None:
            self._restore(bundle)
        self.trackers_started = False
        if accelerator.log_with:
            accelerator.init_trackers(self.run_dir.name, config=cfg.to_dict())
            self.trackers_started = True

        self.batches_per_epoch = len(self.train_loader)
        if cfg.max_steps_per_epoch:
            self.batches_per_epoch = min(self.batches_per_epoch, cfg.max_steps_per_epoch)
        self.warmup_iters = warmup_iterations(cfg.warmup_epochs, self.batches_per_epoch, cfg.warmup_min_iters)
        self._fit_start_plots()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        self._print(f"world size {accelerator.num_processes} ({accelerator.distributed_type.value}, "
                    f"mixed precision {accelerator.mixed_precision}, device {accelerator.device})")
        self._print(f"training {cfg.model} on {self.data_spec.yaml_path} for epochs "
                    f"{self.start_epoch + 1}..{cfg.epochs}: {self.batches_per_epoch} batches/epoch, global batch "
                    f"{self.total_batch}, accumulate {self.accumulate}, run folder {self.run_dir}")

    def _restore(self, bundle) -> None:
        meta = bundle.metadata
        self.optimizer.load_state_dict(bundle.optimizer_state)
        if bundle.ema_state:
            self.ema.load_state_dict(bundle.ema_state)
        self.ema.updates = int(meta.get("ema_updates", 0))
        if self.accelerator.scaler is not None and bundle.scaler_state:
            self.accelerator.scaler.load_state_dict(bundle.scaler_state)
        rank = self.accelerator.process_index
        if bundle.rng_states and rank < len(bundle.rng_states):
            restore_rng_state(bundle.rng_states[rank])
        self.start_epoch = int(meta["epoch"]) + 1
        self.best_fitness = float(meta.get("best_fitness", -1.0))
        self.best_epoch = int(meta.get("best_epoch", -1))
        self.global_step = int(meta.get("global_step", 0))
        self.best_metrics = dict(meta.get("best_metrics", {}))
        self._print(f"resuming {self.resume_from} from epoch {self.start_epoch + 1}")

    # ------------------------------------------------------------------------------------ epoch

    def _set_schedule(self, ni: int, epoch: int) -> int:
        """Set each group's LR and momentum for global iteration `ni`; return the accumulation count."""
        cfg = self.cfg
        lf = lr_factor(epoch, cfg.epochs, cfg.lrf, "cosine" if cfg.cos_lr else "linear")
        if ni <= self.warmup_iters:
            values = warmup_values(ni, self.warmup_iters, epoch, cfg.lr0, lf, cfg.warmup_bias_lr,
                                   cfg.warmup_momentum, cfg.momentum, cfg.nbs, self.total_batch)
            lrs, momentum, accumulate = values["lrs"], values["momentum"], values["accumulate"]
        else:
            lrs, momentum, accumulate = [cfg.lr0 * lf] * 3, cfg.momentum, self.accumulate
        set_lr_momentum(self.optimizer, lrs, momentum)
        return accumulate

    def _multi_scale(self, images: torch.Tensor, ni: int) -> torch.Tensor:
        """Resize the batch to a size in [0.5, 1.5] x imgsz (a multiple of 32), chosen from (seed, ni)."""
        rng = np.random.default_rng([self.cfg.seed, ni])
        low, high = int(self.cfg.imgsz * 0.5) // 32, int(self.cfg.imgsz * 1.5) // 32
        size = max(int(rng.integers(low, high + 1)) * 32, 32)
        factor = size / max(images.shape[2:])
        if factor == 1:
            return images
        new_shape = [max(round(s * factor / 32) * 32, 32) for s in images.shape[2:]]
        return F.interpolate(images, size=new_shape, mode="bilinear", align_corners=False)

    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, accelerator, model, optimizer = self.cfg, self.accelerator, self.model, self.optimizer
        model.train()
        self.train_dataset.set_mosaic(epoch < cfg.epochs - cfg.close_mosaic)
        self.train_dataset.set_epoch(epoch)
        self.train_loader.set_epoch(epoch)
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch)
        nb = self.batches_per_epoch
        last_opt_step = epoch * nb - 1
        loss_sum = torch.zeros(len(self.loss_fn.names))  # on the CPU: the step's items come there anyway
        counted, nonfinite_run, window_has_grads = 0, 0, False
        optimizer.zero_grad(set_to_none=True)
        t_epoch = time.perf_counter()
        for i, batch in enumerate(self.train_loader):
            if i >= nb:
                break
            t0 = time.perf_counter()
            ni = i + nb * epoch
            accumulate = self._set_schedule(ni, epoch)
            images = batch["images"].float() / 255.0  # (B, 3, H, W) in [0, 1]
            if cfg.multi_scale:
                images = self._multi_scale(images, ni)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            step_now = ni - last_opt_step >= accumulate or i == nb - 1
            with nullcontext() if step_now else accelerator.no_sync(model):
                with accelerator.autocast():
                    preds = model(images)
                    loss, items = self.loss_fn(preds, batch["targets"])
                finite, host_items = self._check_loss(loss, items)
                if finite:
                    accelerator.backward(loss * accelerator.num_processes)
            if finite:
                nonfinite_run, window_has_grads = 0, True
                loss_sum += host_items
                counted += 1
            else:
                nonfinite_run += 1
                self._warn_nonfinite(epoch, i, nonfinite_run)
            if step_now:
                if window_has_grads:
                    if cfg.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    if not accelerator.optimizer_step_was_skipped:
                        self.ema.update(accelerator.unwrap_model(model))
                        self.global_step += 1
                optimizer.zero_grad(set_to_none=True)
                last_opt_step, window_has_grads = ni, False
            step_time = time.perf_counter() - t0
            self._first_batch_plots(epoch, i, batch)
            step = {"epoch": epoch, "batch": i, "ni": ni, "finite": finite,
                    "loss_items": host_items.tolist(),
                    "mean_losses": dict(zip(self.loss_fn.names, (loss_sum / max(counted, 1)).tolist())),
                    "instances": int(batch["targets"].shape[0]), "size": int(images.shape[-1]),
                    "memory": self._memory(), "lrs": [g["lr"] for g in optimizer.param_groups],
                    "optimizer_step": step_now, "step_time_s": step_time,
                    "images_per_s": images.shape[0] / max(step_time, 1e-9)}
            for cb in self.callbacks:
                cb.on_step_end(self, step)
        mean = (loss_sum / max(counted, 1)).tolist()
        if accelerator.num_processes > 1:
            mean = accelerator.reduce(torch.tensor(mean, device=accelerator.device), "mean").tolist()
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update({f"train/{name}_loss": value for name, value in zip(self.loss_fn.names, mean)})
        row.update({f"lr/pg{j}": g["lr"] for j, g in enumerate(optimizer.param_groups)})
        row["time_s"] = time.perf_counter() - t_epoch
        return row

    def _check_loss(self, loss: torch.Tensor, items: torch.Tensor) -> tuple[bool, torch.Tensor]:
        """Whether the loss is finite on every rank (all ranks must skip together or none), and the loss
        items on the CPU; one device-to-host copy per step serves both."""
        flag = torch.isfinite(loss.detach()).all().to(torch.float32).reshape(1)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, "sum") / self.accelerator.num_processes
        host = torch.cat((flag, items.detach().float().reshape(-1))).cpu()
        return bool(host[0] == 1.0), host[1:]

    def _warn_nonfinite(self, epoch: int, i: int, run: int) -> None:
        LOGGER.warning("non-finite loss at epoch %d batch %d: step skipped (%d in a row)", epoch + 1, i, run)
        if run >= MAX_NONFINITE_IN_A_ROW:
            raise NonFiniteLossError(
                f"{run} non-finite losses in a row at epoch {epoch + 1}; training stopped. "
                f"The last good checkpoint is {self.weights_dir / 'last.safetensors'}. Try a lower lr0, "
                "mixed_precision no/bf16 instead of fp16, or check the labels with `accelyolo data check`."
            )

    def _memory(self) -> str:
        if torch.cuda.is_available():
            return f"{torch.cuda.memory_reserved() / 1e9:.2f}G"
        return ""

    # ------------------------------------------------------------------------------------ validate, save

    def validate(self):
        """Validate the EMA model: each rank its shard, records gathered, metrics computed on every rank."""
        seen = []
        model = copy.deepcopy(self.ema.ema).fuse()  # BatchNorm folded: the same outputs, ~15% faster
        result = evaluate(model, self.val_loader, self.accelerator, nc=len(self.names), names=self.names,
                          conf_thres=self.cfg.conf_thres, iou_thres=self.cfg.iou_thres, max_det=self.cfg.max_det,
                          on_batch=lambda batch, dets: seen.extend(batch["paths"]),
                          channels_last=self.cfg.channels_last)
        LOGGER.info("rank %d validated %d images", self.accelerator.process_index, len(seen))
        return result

    def save(self, epoch: int, improved: bool) -> None:
        """Write last (and best / periodic) bundles; RNG states of every rank go into each."""
        cfg, accelerator = self.cfg, self.accelerator
        rng_states = [capture_rng_state()]
        if accelerator.num_processes > 1:
            rng_states = gather_object(rng_states)
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(self.model)
            metadata = {
                "epoch": epoch, "global_step": self.global_step, "best_fitness": self.best_fitness,
                "best_epoch": self.best_epoch, "ema_updates": self.ema.updates,
                "schedule": {"batches_per_epoch": self.batches_per_epoch, "warmup_iters": self.warmup_iters,
                             "accumulate": self.accumulate, "total_batch": self.total_batch},
                "config": cfg.to_dict(), "names": self.names, "model": unwrapped.config,
                "metrics": self.last_result.as_dict() if self.last_result is not None else {},
                "best_metrics": self.best_metrics,
                "accelyolo_version": __version__,
            }
            scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
            kwargs = dict(model_state=unwrapped.state_dict(), ema_state=self.ema.state_dict(),
                          optimizer_state=self.optimizer.state_dict(), scaler_state=scaler,
                          rng_states=rng_states, metadata=metadata)
            last = save_checkpoint(self.weights_dir / "last.safetensors", **kwargs)
            LOGGER.info("epoch %d: saved weights/last.safetensors%s", epoch + 1, " and best" if improved else "")
            if improved:
                copy_checkpoint(last, self.weights_dir / "best.safetensors")
            if cfg.save_period > 0 and (epoch + 1) % cfg.save_period == 0:
                copy_checkpoint(last, self.weights_dir / f"epoch{epoch + 1}.safetensors")
        accelerator.wait_for_everyone()

    # ------------------------------------------------------------------------------------ pictures, end

    def _fit_start_plots(self) -> None:
        if not (self.cfg.plots and self.accelerator.is_main_process and self.start_epoch == 0):
            return
        from accelyolo.plots import plot_labels

        plot_labels(self.train_dataset.labels, self.names, self.run_dir / "labels.png")

    def _first_batch_plots(self, epoch: int, i: int, batch: dict[str, Any]) -> None:
        if not (self.cfg.plots and self.accelerator.is_main_process and epoch == self.start_epoch and i < 3):
            return
        from accelyolo.plots import plot_batch

        plot_batch(batch["images"].cpu(), batch["targets"].cpu(), batch["paths"], self.names,
                   self.run_dir / f"train_batch{i}.png")

    def _finish(self, epoch: int, history: list, stopped_early: bool) -> FitResult:
        accelerator = self.accelerator
        last = self.weights_dir / "last.safetensors"
        best = self.weights_dir / "best.safetensors"
        inference = self.weights_dir / "inference.safetensors"
        if accelerator.is_main_process and (best.exists() or last.exists()):
            strip_checkpoint(best if best.exists() else last, inference)
            if self.last_result is not None:
                from accelyolo.reports import per_class_table, plot_confusion_matrix, plot_curves

                self.console.print(per_class_table(self.last_result, self.names))
                if self.cfg.plots:
                    plot_curves(self.last_result, self.names, self.run_dir)
                    plot_confusion_matrix(self.last_result, self.names, self.run_dir)
        accelerator.wait_for_everyone()
        for cb in self.callbacks:
            cb.on_fit_end(self)
        if self.trackers_started:
            accelerator.end_training()
        if self.best_metrics:
            self._print(f"best epoch {self.best_epoch + 1}: " +
                        " ".join(f"{k}={v:.4f}" for k, v in self.best_metrics.items()))
        return FitResult(run_dir=self.run_dir, best_epoch=self.best_epoch + 1, metrics=self.best_metrics,
                         last_checkpoint=last, best_checkpoint=best if best.exists() else None,
                         inference_checkpoint=inference if inference.exists() else None,
                         epochs_completed=epoch + 1, stopped_early=stopped_early, history=history)
