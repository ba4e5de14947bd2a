"""`fit()`: from a recipe and options (or a checkpoint to resume) to a finished run.

It resolves the configuration, picks the experiment the options ask for (`experiment_class`: a
`DistillExperiment` when a teacher is set, a `MultiTaskExperiment` for detection + segmentation, one class
of both when both are asked for, a user's subclass outermost, else `Experiment`) and runs the trainer on it.
It lives above the trainer and the feature experiments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accelyolo.core.config import ConfigError, TrainConfig, config_from_dict, load_config
from accelyolo.core.errors import ResumeError
from accelyolo.core.runs import find_resume_checkpoint
from accelyolo.training.callbacks import Callback
from accelyolo.training.experiment import Experiment
from accelyolo.training.records import FitResult
from accelyolo.training.trainer import Trainer
from accelyolo.weights.checkpoint import read_checkpoint_metadata

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


def experiment_class(cfg: TrainConfig, user: type[Experiment] | None = None) -> type[Experiment]:
    """The experiment a configuration asks for: `user` (a subclass of `Experiment`, or none) outermost, then
    distillation (`teacher`), then detection + segmentation (`segment`), on `Experiment`. Each extends the
    build steps through `super()` (an added term wraps the objective of the ones after it), so any of them
    combine into one class; a feature the user's class already derives from is not added twice.

    The features keep that order whatever the user's class derives from: distillation always wraps the
    multi-task objective (which extends a detection objective, never a distilled one). So a user's subclass of
    `MultiTaskExperiment` with a teacher gets distillation above it (`Distill, Mine, MultiTask`): Python's
    method order would otherwise put the feature the user inherits above the one added beside it."""
    if user is not None and not (isinstance(user, type) and issubclass(user, Experiment)):
        raise ConfigError(f"'experiment' must be a subclass of accelyolo.Experiment (a class), got {user!r}")
    features: list[type[Experiment]] = []  # outermost first
    if cfg.teacher:
        from accelyolo.tasks.distill import DistillExperiment

        features.append(DistillExperiment)
    if cfg.segment:
        from accelyolo.tasks.multitask import MultiTaskExperiment

        features.append(MultiTaskExperiment)
    if user is None or user is Experiment:
        bases = features
    else:
        inherited = [i for i, f in enumerate(features) if issubclass(user, f)]
        split = inherited[0] if inherited else 0  # features before it must wrap what the user's class inherits
        bases = [*features[:split], user, *(f for f in features[split:] if not issubclass(user, f))]
    if len(bases) < 2:
        return bases[0] if bases else Experiment
    name = "".join(f.__name__.removesuffix("Experiment") for f in bases) + "Experiment"
    return type(name, tuple(bases), {"__module__": __name__})


def fit(
    recipe: str | None = None,
    *,
    callbacks: list[Callback] | None = None,
    experiment: type[Experiment] | None = None,
    trainer_class: type[Trainer] = Trainer,
    **overrides: Any,
) -> FitResult:
    """Train a YOLO model. `recipe` is a yaml path or shipped recipe name; keywords are `TrainConfig` fields.

    `experiment` (a subclass of `accelyolo.Experiment`) replaces how parts of the run are built (its `build_*`
    steps), combined with the features the options ask for; `trainer_class` (a subclass of `Trainer`) changes
    the loop itself. Example: `accelyolo.fit("demo", epochs=5)` or `accelyolo.fit(data="data.yaml", model="yolov8s")`.
    """
    if "parts" in overrides:
        raise TypeError(
            "fit(parts=...) is gone: subclass accelyolo.Experiment, override the build step of the part "
            "(build_datasets, build_model, build_objective, build_optimizer, build_scheduler, build_evaluator) "
            "and pass fit(experiment=YourExperiment)"
        )
    resume = overrides.get("resume")
    if resume:
        cfg, checkpoint = config_for_resume(resume, overrides)
    else:
        cfg, checkpoint = load_config(recipe, **overrides), None
    chosen = experiment_class(cfg, experiment)
    return trainer_class(cfg, callbacks=callbacks, experiment=chosen, resume_from=checkpoint).fit()


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
