"""The range checks of a `TrainConfig`: one message per option out of its range or at odds with another.

`accelyolo.core.config` raises them together as one `ConfigError` when a configuration is made; the
finders here only read the options, so they import nothing from the configuration module at run time.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from accelyolo.core.defaults import imgsz_problem

if TYPE_CHECKING:  # pragma: no cover
    from accelyolo.core.config import TrainConfig

MIXED_PRECISION = ("no", "fp16", "bf16", "fp8")


def did_you_mean(name: str, choices: list[str]) -> str:
    """` Did you mean 'x'?` for the closest of `choices` to a misspelt `name`, or "" when none is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def value_problems(cfg: TrainConfig) -> list[str]:
    """A message for each option out of its range or at odds with another: what types alone do not catch."""
    problems = []
    if problem := imgsz_problem("'imgsz'", cfg.imgsz):
        problems.append(problem)
    for key in ("epochs", "batch_size", "nbs", "val_interval", "max_det"):
        if getattr(cfg, key) < 1:
            problems.append(f"'{key}' must be at least 1, got {getattr(cfg, key)}")
    for key in ("workers", "heavy_eval_range", "save_last_n", "distill_weight", "det_gain", "seg_gain", "freeze"):
        if getattr(cfg, key) < 0:
            problems.append(f"'{key}' must be >= 0, got {getattr(cfg, key)}")
    if cfg.temperature <= 0:
        problems.append(f"'temperature' must be > 0, got {cfg.temperature}")
    if cfg.cache_budget_mb is not None and cfg.cache_budget_mb <= 0:
        problems.append(
            f"'cache_budget_mb' must be > 0 or empty (half of the available memory), got {cfg.cache_budget_mb}"
        )
    if cfg.cache not in (None, "ram", "disk"):
        problems.append(f"'cache' must be 'ram', 'disk', 'none' or empty, got {cfg.cache!r}")
    if cfg.rect and cfg.image_weights:
        problems.append("'rect' and 'image_weights' exclude each other (rect batches keep a fixed order)")
    if cfg.augment and not Path(cfg.augment).is_file():
        problems.append(f"'augment': the albumentations pipeline '{cfg.augment}' does not exist")
    if cfg.mixed_precision not in (None, *MIXED_PRECISION):
        problems.append(
            f"'mixed_precision' must be {', '.join(MIXED_PRECISION)} or empty (the accelerate config's), "
            f"got {cfg.mixed_precision!r}"
        )
    if not 0.0 <= cfg.best_min_score <= 1.0:
        problems.append(f"'best_min_score' must lie in [0, 1], got {cfg.best_min_score}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        problems.append(f"'label_smoothing' must lie in [0, 1), got {cfg.label_smoothing}")
    if cfg.tal_min_side < 0:
        problems.append(f"'tal_min_side' must be >= 0 (pixels), got {cfg.tal_min_side}")
    problems += scheduler_problems(cfg) + training_problems(cfg) + multitask_problems(cfg)
    fractions = ("hsv_h", "hsv_s", "hsv_v", "flipud", "fliplr", "mosaic", "mixup", "crop", "crop_erosion")
    return problems + unit_interval_problems({f"'{key}'": getattr(cfg, key) for key in fractions})


def scheduler_problems(cfg: TrainConfig) -> list[str]:
    """'scheduler' names a torch scheduler (or 'yolo'), and 'scheduler_args' are arguments it takes."""
    if cfg.scheduler == "yolo":
        if cfg.scheduler_args:
            return [
                "'scheduler_args' apply to a torch scheduler; the 'yolo' schedule reads lr0, lrf, cos_lr "
                "and the warmup_* hyperparameters"
            ]
        return []
    import inspect

    from torch.optim import lr_scheduler

    known = sorted(
        n
        for n in dir(lr_scheduler)
        if isinstance(getattr(lr_scheduler, n), type)
        and issubclass(getattr(lr_scheduler, n), lr_scheduler.LRScheduler)
        and n not in ("LRScheduler", "_LRScheduler")
    )
    if cfg.scheduler not in known:
        return [
            f"'scheduler' must be 'yolo' or a torch.optim.lr_scheduler class, got "
            f"{cfg.scheduler!r}.{did_you_mean(cfg.scheduler, ['yolo', *known])} Known: {', '.join(known)}"
        ]
    parameters = inspect.signature(getattr(lr_scheduler, cfg.scheduler)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return []
    takes = [name for name in parameters if name != "optimizer"]
    unknown = [repr(key) for key in (cfg.scheduler_args or {}) if key not in takes]
    if unknown:
        return [f"'scheduler_args': {cfg.scheduler} takes no {', '.join(unknown)}; it takes {', '.join(takes)}"]
    return []


def training_problems(cfg: TrainConfig) -> list[str]:
    """Ranges of the EMA, the validation thresholds and the loss hyperparameters: values the model's parts
    would refuse only once the run folder exists (or at the first validation)."""
    problems = []
    if not 0.0 <= cfg.ema_decay < 1.0:
        problems.append(f"'ema_decay' must lie in [0, 1), got {cfg.ema_decay}")
    if not cfg.ema_tau > 0:
        problems.append(f"'ema_tau' must be > 0 (optimizer steps), got {cfg.ema_tau}")
    problems += unit_interval_problems({"'conf_thres'": cfg.conf_thres, "'iou_thres'": cfg.iou_thres})
    for key in ("cls_pw", "obj_pw"):
        if not getattr(cfg, key) > 0:
            problems.append(f"'{key}' must be > 0 (a BCE positive weight), got {getattr(cfg, key)}")
    if not cfg.fl_gamma >= 0:
        problems.append(f"'fl_gamma' must be >= 0 (0 = plain BCE), got {cfg.fl_gamma}")
    return problems


def unit_interval_problems(values: dict[str, float]) -> list[str]:
    """A message for each value (keyed by the option's name as the user wrote it) outside [0, 1]."""
    return [f"{name} must lie in [0, 1], got {value}" for name, value in values.items() if not 0.0 <= value <= 1.0]


def multitask_problems(cfg: TrainConfig) -> list[str]:
    problems = []
    if cfg.seg_batch_size < 0:
        problems.append(f"'seg_batch_size' must be >= 0 (0 = batch_size), got {cfg.seg_batch_size}")
    if not 0.0 < cfg.seg_aspect <= 1.0:
        problems.append(f"'seg_aspect' must lie in (0, 1], got {cfg.seg_aspect}")
    if not 0.0 <= cfg.seg_scale < 1.0:
        problems.append(f"'seg_scale' must lie in [0, 1), got {cfg.seg_scale}")
    if cfg.seg_val_interval < 1:
        problems.append(f"'seg_val_interval' must be at least 1, got {cfg.seg_val_interval}")
    if not 0.0 <= cfg.det_weight <= 1.0:
        problems.append(f"'det_weight' must lie in [0, 1], got {cfg.det_weight}")
    for name, weight in (cfg.seg_class_weights or {}).items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            problems.append(f"'seg_class_weights': the weight of {name!r} must be a number >= 0, got {weight!r}")
    return problems
