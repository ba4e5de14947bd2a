"""Parameter groups, optimizers and learning-rate / momentum / warm-up schedules.

Everything here follows the YOLOv5 recipe (behaviour, not code):

- three parameter groups: conv/linear weights with weight decay, normalization weights without,
  biases without;
- a nominal batch of 64: gradients are accumulated over `round(64 / global_batch)` steps and the
  weight decay is scaled by `global_batch * accumulate / 64`, so the regularization per image
  stays the same whatever the batch;
- schedules are pure functions of the (fractional) epoch and the global iteration, so a resumed
  run computes exactly the values the uninterrupted run would have used; `YoloScheduler` exposes
  them as a `torch.optim.lr_scheduler.LRScheduler` whose state is the number of steps taken. It is
  deliberately not passed to `accelerator.prepare` (a prepared scheduler steps once per process).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "OPTIMIZERS",
    "YoloSchedule",
    "YoloScheduler",
    "build_scheduler",
    "accumulate_steps",
    "build_optimizer",
    "build_param_groups",
    "lr_factor",
    "scaled_weight_decay",
    "set_lr_momentum",
    "warmup_iterations",
    "auto_optimizer",
    "warmup_values",
]

# Normalization layers whose weights are scales, not filters: decaying them towards 0 hurts.
# nn.RMSNorm exists from torch 2.4; the package supports torch >= 2.2.
NORM_LAYERS: tuple[type[nn.Module], ...] = tuple(
    layer for layer in (_NormBase, nn.GroupNorm, nn.LayerNorm, getattr(nn, "RMSNorm", None)) if layer is not None
)
OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSProp")
AUTO_MAX_STEPS = 10_000  # `optimizer: auto` picks AdamW up to this many optimizer steps, SGD beyond
AUTO_ADAMW_LR0 = 0.002  # its AdamW learning rate, any class count (see auto_optimizer)


def auto_optimizer(nc: int, optimizer_steps: int, lr0: float, momentum: float, warmup_bias_lr: float) -> tuple:
    """What `optimizer: auto` resolves to: `(optimizer, lr0, momentum, warmup_bias_lr)`.

    A run of at most `AUTO_MAX_STEPS` optimizer steps (from scratch on a small dataset, a short fine-tune)
    gets AdamW at `lr0 = AUTO_ADAMW_LR0` whatever the class count `nc`, beta1 0.9 and a bias warm-up from 0.
    ultralytics' rule lowers that LR with the classes (`0.002 * 5 / (4 + nc)`); on the real photograph sets
    (1, 6 and 7 classes, 3 seeds each, README "Optimizer and warm-up") the flat 0.002 beat it by 0.07 and 0.017
    mAP50-95 on the two many-class sets (where the rule gave 0.001 and 0.00091) and beat YOLOv5's SGD at
    lr0 0.01 on all three. A longer run keeps SGD with the given lr0, momentum and bias warm-up LR; `nc` is
    kept in the signature for rules that use it.
    """
    if optimizer_steps > AUTO_MAX_STEPS:
        return "SGD", lr0, momentum, warmup_bias_lr
    return "AdamW", AUTO_ADAMW_LR0, 0.9, 0.0


LR_SCHEDULES = ("cosine", "linear")


def build_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split the trainable parameters into the three YOLOv5 groups.

    Returns:
        `[weights, norm, bias]` as optimizer group dicts, each with `"params"`, `"weight_decay"`
        and `"name"` (`"weights"`, `"norm"`, `"bias"`). Group 0 (conv/linear weights and any
        other parameter) gets `weight_decay`; group 1 (weights of normalization layers) and
        group 2 (every parameter named `bias`, normalization biases included) get 0. All three
        groups are always present (possibly empty), so their indices are stable for the warm-up.
        Frozen parameters (`requires_grad=False`) are left out; a parameter shared by two
        modules appears once.
    """
    weights: list[nn.Parameter] = []
    norm: list[nn.Parameter] = []
    bias: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if name == "bias":
                bias.append(param)
            elif isinstance(module, NORM_LAYERS):
                norm.append(param)
            else:
                weights.append(param)
    return [
        {"params": weights, "weight_decay": weight_decay, "name": "weights"},
        {"params": norm, "weight_decay": 0.0, "name": "norm"},
        {"params": bias, "weight_decay": 0.0, "name": "bias"},
    ]


def build_optimizer(
    name: str, model: nn.Module, lr: float, momentum: float, weight_decay: float, fused: bool = False
) -> torch.optim.Optimizer:
    """Build an optimizer over `build_param_groups(model, weight_decay)`.

    Args:
        name: `SGD` (Nesterov), `Adam`, `AdamW` (betas `(momentum, 0.999)`) or `RMSProp`
            (torch's RMSprop with `momentum`); matched case-insensitively.
        model: the (unwrapped) model.
        lr: initial learning rate of every group; also stored as each group's `"initial_lr"`,
            from which the schedule computes the current one.
        momentum: SGD/RMSProp momentum, or Adam's beta1.
        weight_decay: decay of group 0 (already scaled with `scaled_weight_decay`).
        fused: torch's fused kernels for SGD, Adam and AdamW (one kernel launch per step and group instead
            of one per operation: on a GPU, where a nano model's step waits on its kernel launches; also
            no device-to-host wait for the GradScaler's overflow check). RMSProp has none and ignores it.

    Raises:
        ValueError: an unknown name (the message lists the choices) or no trainable parameter.
    """
    choices = {choice.lower(): choice for choice in OPTIMIZERS}
    canonical = choices.get(name.lower())
    if canonical is None:
        raise ValueError(f"unknown optimizer '{name}'; choose one of {', '.join(OPTIMIZERS)}")
    groups = build_param_groups(model, weight_decay)
    if not any(group["params"] for group in groups):
        raise ValueError("the model has no trainable parameter (all have requires_grad=False)")
    for group in groups:
        group["initial_lr"] = lr
    kernels = {"fused": True} if fused else {}
    if canonical == "SGD":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, **kernels)
    if canonical == "Adam":
        return torch.optim.Adam(groups, lr=lr, betas=(momentum, 0.999), **kernels)
    if canonical == "AdamW":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), **kernels)
    return torch.optim.RMSprop(groups, lr=lr, momentum=momentum)


def match_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor of its parameter's shape (momentum, Adam's moments) the
    parameter's memory layout, in place of the contiguous one a loaded state dict has. A channels-last
    model's weights are not contiguous, and torch's fused CUDA kernels refuse moments laid out otherwise
    than their parameters ("must have same dtype, device, and layout"); the values are unchanged."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def set_lr_momentum(optimizer: torch.optim.Optimizer, lrs: Sequence[float], momentum: float | None = None) -> None:
    """Write per-group learning rates and (optionally) momentum into an optimizer.

    Momentum goes to `"momentum"` (SGD, RMSprop) or to the first beta (Adam, AdamW).
    """
    if len(lrs) != len(optimizer.param_groups):
        raise ValueError(f"got {len(lrs)} learning rates for {len(optimizer.param_groups)} parameter groups")
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
        if momentum is None:
            continue
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        elif "momentum" in group:
            group["momentum"] = momentum


def lr_factor(epoch_progress: float, epochs: int, lrf: float, kind: str) -> float:
    """Learning-rate multiplier (of `lr0`) at a fractional epoch.

    Args:
        epoch_progress: epochs done, fractional allowed (`epoch + i / batches`).
        epochs: total epochs of the run.
        lrf: final multiplier (`lr0 * lrf` at the end).
        kind: `"cosine"` — one-cycle `((1 - cos(x*pi/epochs)) / 2) * (lrf - 1) + 1`, from 1 at
            x=0 to lrf at x=epochs; `"linear"` — `(1 - x/(epochs-1)) * (1 - lrf) + lrf`, reaching
            lrf at the last epoch (x=epochs-1; a 1-epoch run divides by 1).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    x = float(epoch_progress)
    if kind == "cosine":
        return ((1.0 - math.cos(x * math.pi / epochs)) / 2.0) * (lrf - 1.0) + 1.0
    if kind == "linear":
        return (1.0 - x / max(epochs - 1, 1)) * (1.0 - lrf) + lrf
    raise ValueError(f"unknown LR schedule '{kind}'; choose one of {', '.join(LR_SCHEDULES)}")


def accumulate_steps(nbs: int, total_batch: int) -> int:
    """Gradient accumulation steps that make `total_batch` act like the nominal batch `nbs`."""
    if total_batch < 1:
        raise ValueError(f"total batch size must be >= 1, got {total_batch}")
    return max(round(nbs / total_batch), 1)


def scaled_weight_decay(wd: float, total_batch: int, accumulate: int, nbs: int) -> float:
    """Weight decay scaled by the images per optimizer step relative to the nominal batch."""
    return wd * total_batch * accumulate / nbs


def warmup_iterations(warmup_epochs: float, batches_per_epoch: int, minimum: int = 0, epochs: int | None = None) -> int:
    """Length of the warm-up in iterations: `max(round(warmup_epochs * batches), minimum)`, and never past
    the start of the last epoch when `epochs` is given (so a short run has at least one epoch at full LR).

    Returns 0 when `warmup_epochs <= 0` (no warm-up at all).
    """
    if warmup_epochs <= 0:
        return 0
    iterations = max(round(warmup_epochs * batches_per_epoch), minimum)
    if epochs is not None:
        iterations = min(iterations, max(epochs - 1, 1) * batches_per_epoch)
    return iterations


def warmup_values(
    iteration: int,
    warmup_iters: int,
    epoch: int,
    lr0: float,
    lf: float | Callable[[float], float],
    warmup_bias_lr: float,
    warmup_momentum: float,
    momentum: float,
    nbs: int,
    total_batch: int,
) -> dict[str, Any]:
    """Learning rates, momentum and accumulation at one iteration of the warm-up.

    Each value is interpolated linearly over `[0, warmup_iters]`: the bias group's lr from
    `warmup_bias_lr` down to `lr0 * lf`, the other groups from 0 up to `lr0 * lf`, momentum from
    `warmup_momentum` to `momentum`, accumulation from 1 to `nbs / total_batch` (rounded half to
    even, at least 1). At and past `warmup_iters` the values are the post-warm-up ones.

    Args:
        iteration: global iteration (batches seen since the start of training).
        warmup_iters: warm-up length (`warmup_iterations`); 0 means no warm-up.
        epoch: current epoch, used when `lf` is a schedule function.
        lr0: initial learning rate.
        lf: the schedule multiplier at this epoch (`lr_factor(...)`), or a function of the epoch.
        warmup_bias_lr, warmup_momentum, momentum: the hyperparameters of the same names.
        nbs: nominal batch size (64).
        total_batch: images per iteration over all processes.

    Returns:
        `{"lrs": [weights, norm, bias], "momentum": float, "accumulate": int}`.
    """
    factor = lf(epoch) if callable(lf) else float(lf)
    target_lr = lr0 * factor
    final_accumulate = nbs / total_batch
    if warmup_iters <= 0 or iteration >= warmup_iters:
        return {
            "lrs": [target_lr, target_lr, target_lr],
            "momentum": float(momentum),
            "accumulate": accumulate_steps(nbs, total_batch),
        }
    xp = [0, warmup_iters]
    lr_weights = float(np.interp(iteration, xp, [0.0, target_lr]))
    lr_bias = float(np.interp(iteration, xp, [warmup_bias_lr, target_lr]))
    accumulate = max(1, int(np.interp(iteration, xp, [1.0, final_accumulate]).round()))
    return {
        "lrs": [lr_weights, lr_weights, lr_bias],
        "momentum": float(np.interp(iteration, xp, [warmup_momentum, momentum])),
        "accumulate": accumulate,
    }


# ----------------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class YoloSchedule:
    """YOLOv5's schedule as pure functions of the global iteration `ni` (batches since the start).

    An optimizer step happens at iteration `ni` when at least `accumulate(ni)` batches have passed since
    the previous step, or when `ni` is the last batch of its epoch (so every epoch ends with empty
    gradients and a run resumed at an epoch boundary takes the steps of one never stopped). The LR and
    momentum of that step are `lrs(ni)` and `momentum_at(ni)`. Everything is a function of `ni`, never
    of a count kept somewhere, which is what makes resume exact.
    """

    lr0: float
    lrf: float
    kind: str  # "cosine" or "linear"
    epochs: int
    batches_per_epoch: int
    warmup_iters: int
    warmup_bias_lr: float
    warmup_momentum: float
    momentum: float
    nbs: int
    total_batch: int

    def _warmup(self, ni: int) -> dict[str, Any]:
        epoch = ni // self.batches_per_epoch
        lf = lr_factor(epoch, self.epochs, self.lrf, self.kind)
        return warmup_values(
            ni,
            self.warmup_iters,
            epoch,
            self.lr0,
            lf,
            self.warmup_bias_lr,
            self.warmup_momentum,
            self.momentum,
            self.nbs,
            self.total_batch,
        )

    def accumulate(self, ni: int) -> int:
        """Batches per optimizer step at iteration `ni` (ramped from 1 during the warmup)."""
        return self._warmup(ni)["accumulate"]

    def warmup_over_by(self, epoch: int) -> bool:
        """Whether the warm-up has ended when epoch `epoch` (1-based) ends. Always true of the last epoch,
        since `warmup_iterations` never passes its start (and true of every epoch without a warm-up)."""
        return epoch * self.batches_per_epoch >= self.warmup_iters

    def lrs(self, ni: int) -> list[float]:
        """[weights, norm, bias] learning rates of a step taken at iteration `ni`."""
        return self._warmup(ni)["lrs"]

    def momentum_at(self, ni: int) -> float:
        return self._warmup(ni)["momentum"]

    def is_step_iteration(self, ni: int, last_step: int) -> bool:
        """Whether the optimizer steps at `ni`, the previous step having been at iteration `last_step`."""
        return ni - last_step >= self.accumulate(ni) or ni % self.batches_per_epoch == self.batches_per_epoch - 1

    def next_step_iteration(self, last_step: int) -> int:
        """The iteration of the step after the one at `last_step` (-1: before the first)."""
        ni = last_step + 1
        while not self.is_step_iteration(ni, last_step):
            ni += 1
        return ni

    def steps_before(self, iteration: int) -> int:
        """Optimizer steps due at iterations before `iteration`."""
        steps, last = 0, -1
        while (last := self.next_step_iteration(last)) < iteration:
            steps += 1
        return steps

    def total_steps(self) -> int:
        """Optimizer steps of the whole run (what a torch scheduler's `total_steps`/`T_max` should be)."""
        return self.steps_before(self.epochs * self.batches_per_epoch)


class YoloScheduler(LRScheduler):
    """`YoloSchedule` as a torch scheduler: `step()` once per optimizer step (every iteration where
    `YoloSchedule.is_step_iteration` holds, also when that step was skipped for a non-finite loss).

    After `step()` the optimizer holds the LRs and momentum of the *next* step, whose iteration follows
    from the number of steps taken (`last_epoch`), so `state_dict()` (that count) is all a resume needs.
    Per group: the bias group warms down from `warmup_bias_lr`, the others up from 0; momentum warms up
    from `warmup_momentum`; then cosine or linear decay from lr0 to lr0 * lrf.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: YoloSchedule) -> None:
        self.schedule = schedule
        self._cached: tuple[int, int] = (0, -1)  # (steps taken, iteration of the last one; -1 = none yet)
        super().__init__(optimizer)

    def iteration_of_next_step(self) -> int:
        """The iteration of the next step, after the `last_epoch` steps taken so far."""
        steps_taken, last = self._cached
        if steps_taken > self.last_epoch:
            steps_taken, last = 0, -1
        while steps_taken < self.last_epoch:
            last = self.schedule.next_step_iteration(last)
            steps_taken += 1
        self._cached = (steps_taken, last)
        return self.schedule.next_step_iteration(last)

    def get_lr(self) -> list[float]:
        return self.schedule.lrs(self.iteration_of_next_step())

    def step(self) -> None:  # type: ignore[override]
        super().step()
        set_lr_momentum(self.optimizer, self.get_last_lr(), self.schedule.momentum_at(self.iteration_of_next_step()))

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "base_lrs": self.base_lrs,
            "_last_lr": self._last_lr,
            "schedule": asdict(self.schedule),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        self._cached = (0, -1)
        lrs = self.get_lr()
        set_lr_momentum(self.optimizer, lrs, self.schedule.momentum_at(self.iteration_of_next_step()))
        self._last_lr = lrs


def build_scheduler(
    name: str, optimizer: torch.optim.Optimizer, schedule: YoloSchedule, kwargs: dict[str, Any] | None = None
) -> LRScheduler:
    """`YoloScheduler` for `name == "yolo"`, else the torch scheduler class `name` with `kwargs`.

    A torch scheduler is stepped like the YOLO one (once per optimizer step); `total_steps` (OneCycleLR)
    and `T_max` (CosineAnnealingLR) default to the run's optimizer steps, `max_lr` to lr0. The warmup of
    the accumulation count still follows the YOLO schedule; its LR/momentum warmup does not apply.
    """
    if name == "yolo":
        if kwargs:
            raise ValueError("scheduler_args apply to torch schedulers, not to the 'yolo' schedule")
        return YoloScheduler(optimizer, schedule)
    from torch.optim import lr_scheduler

    cls = getattr(lr_scheduler, name, None)
    if not (isinstance(cls, type) and issubclass(cls, LRScheduler)):
        raise ValueError(f"unknown scheduler {name!r}: 'yolo' or a torch.optim.lr_scheduler class")
    kwargs = dict(kwargs or {})
    defaults = {
        "OneCycleLR": {"total_steps": schedule.total_steps(), "max_lr": schedule.lr0},
        "CosineAnnealingLR": {"T_max": schedule.total_steps()},
    }
    for key, value in defaults.get(name, {}).items():
        kwargs.setdefault(key, value)
    return cls(optimizer, **kwargs)
