"""`fit()`: from a recipe and options (or a checkpoint to resume) to a finished run.

It resolves the configuration, picks the trainer the options ask for (a `DistillTrainer` when a teacher
is set, a `MultiTaskTrainer` for detection + segmentation, a trainer made of both when both are asked for,
else `Trainer`) and runs it. It lives above the trainer and its subclasses, which all import
`accelyolo.trainer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accelyolo.callbacks import Callback
from accelyolo.checkpoint import read_checkpoint_metadata
from accelyolo.config import ConfigError, TrainConfig, config_from_dict, load_config
from accelyolo.errors import ResumeError
from accelyolo.records import FitResult
from accelyolo.runs import find_resume_checkpoint
from accelyolo.trainer import Parts, Trainer

# Options that may change when a run is resumed; every other option comes from the checkpoint.
RESUME_CHANGEABLE = (
    "epochs",
    "workers",
    "patience",
    "log_with",
    "push_to_hub",
    "plots",
    "save_period",
    "resume",
    "max_steps_per_epoch",
    "val_interval",
    "heavy_eval_range",
    "val_final_only",
    "save_last_n",
    "project",
)


def trainer_class_for(cfg: TrainConfig) -> type[Trainer]:
    """The trainer a configuration asks for: each feature's trainer extends `Trainer` through cooperative
    `super()` calls and objectives that wrap one another (`accelyolo.losses.objective`), so several features
    combine into one class of all of them, the added terms (distillation) outermost."""
    features: list[type[Trainer]] = []
    if cfg.teacher:
        from accelyolo.distill import DistillTrainer

        features.append(DistillTrainer)
    if cfg.segment:
        from accelyolo.multitask import MultiTaskTrainer

        features.append(MultiTaskTrainer)
    if len(features) < 2:
        return features[0] if features else Trainer
    name = "".join(f.__name__.removesuffix("Trainer") for f in features) + "Trainer"
    return type(name, tuple(features), {"__module__": __name__})


def fit(
    recipe: str | None = None,
    *,
    callbacks: list[Callback] | None = None,
    parts: Parts | None = None,
    trainer_class: type[Trainer] | None = None,
    **overrides: Any,
) -> FitResult:
    """Train a YOLO model. `recipe` is a yaml path or shipped recipe name; keywords are `TrainConfig` fields.

    `parts` replaces parts of the trainer (see `Parts`), `trainer_class` the trainer itself (a subclass).
    Example: `accelyolo.fit("demo", epochs=5)` or `accelyolo.fit(data="data.yaml", model="yolov8s")`.
    """
    resume = overrides.get("resume")
    if resume:
        cfg, checkpoint = config_for_resume(resume, overrides)
    else:
        cfg, checkpoint = load_config(recipe, **overrides), None
    trainer_class = trainer_class or trainer_class_for(cfg)
    return trainer_class(cfg, callbacks=callbacks, parts=parts, resume_from=checkpoint).fit()


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
    metadata = read_checkpoint_metadata(path)
    if "stripped" in metadata:
        raise ResumeError(
            f"--resume: '{path}' is an inference file (optimizer and run state stripped); resume from its run's "
            "weights/last.safetensors, or train anew from its weights with --weights."
        )
    saved = metadata.get("config")
    if not isinstance(saved, dict):
        raise ResumeError(
            f"--resume: '{path}' holds no training run's options (not a weights/last.safetensors of a run); "
            "to train anew from its weights, pass --weights instead."
        )
    saved = dict(saved)
    saved.update({k.replace("-", "_"): v for k, v in overrides.items()})
    saved["resume"] = str(path)
    return config_from_dict(saved, {k: f"checkpoint {path}" for k in saved}), path
