"""The experiment trackers a run logs to (`log_with`): every tracker Accelerate has, in one table.

Each gets, through Accelerate, the run's options (`init_trackers(config=...)`) and every epoch's
results.csv row as scalars; the trackers that take pictures also get the first training batches, the
validation predictions after each validation and results.png at the end (`log_image`). Accelerate's own
`log_images` serves the trackers that have it; mlflow, comet_ml, dvclive and trackio are reached through
their own image call. Where a tracker writes: TensorBoard and Aim into the run folder (Accelerate's
logging directory), wandb into `<run>/wandb` (offline with `WANDB_MODE=offline`), mlflow where
`MLFLOW_TRACKING_URI` points (a `file:` folder works offline), the others where their own settings say.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelyolo.core.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from accelerate import Accelerator
    from PIL import Image

__all__ = ["TRACKERS", "chosen_trackers", "image_trackers", "log_image", "tracker_init_kwargs"]

LOGGER = logging.getLogger("accelyolo")


@dataclass(frozen=True)
class TrackerInfo:
    package: str  # what `pip install` takes
    available: str  # the `accelerate.utils` function that says whether it is installed
    images: str | None  # how it takes a picture: "accelerate" (its log_images), "own" (below), None


TRACKERS: dict[str, TrackerInfo] = {
    "tensorboard": TrackerInfo("tensorboard", "is_tensorboard_available", "own"),
    "wandb": TrackerInfo("wandb", "is_wandb_available", "accelerate"),
    "mlflow": TrackerInfo("mlflow-skinny", "is_mlflow_available", "own"),
    "trackio": TrackerInfo("trackio", "is_trackio_available", "own"),
    "comet_ml": TrackerInfo("comet_ml", "is_comet_ml_available", "own"),
    "aim": TrackerInfo("aim", "is_aim_available", "accelerate"),
    "clearml": TrackerInfo("clearml", "is_clearml_available", "accelerate"),
    "dvclive": TrackerInfo("dvclive", "is_dvclive_available", "own"),
    "swanlab": TrackerInfo("swanlab", "is_swanlab_available", "accelerate"),
}


def chosen_trackers(log_with: str | None) -> list[str] | None:
    """The installed trackers among `log_with` (comma-separated names, or `all`: every installed one); a
    named tracker that is not installed is skipped with a warning naming its package."""
    if not log_with:
        return None
    import accelerate.utils

    names = [name.strip() for name in log_with.split(",") if name.strip()]
    if names == ["all"]:
        return [n for n, info in TRACKERS.items() if getattr(accelerate.utils, info.available)()] or None
    chosen = []
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"'log_with': unknown tracker '{name}'; use {', '.join(TRACKERS)} or all.")
        if getattr(accelerate.utils, TRACKERS[name].available)():
            chosen.append(name)
        else:
            LOGGER.warning("tracker '%s' is not installed; skipping it (pip install %s)", name, TRACKERS[name].package)
    return chosen or None


def tracker_init_kwargs(run_dir: Path) -> dict[str, dict[str, Any]]:
    """`init_trackers(init_kwargs=...)`: the trackers that would write into the working directory write into
    the run folder instead."""
    return {"wandb": {"dir": str(run_dir), "name": run_dir.name}, "dvclive": {"dir": str(run_dir / "dvclive")}}


def image_trackers(accelerator: Accelerator) -> list[str]:
    """The started trackers that take pictures."""
    return [t.name for t in accelerator.trackers if t.name in TRACKERS and TRACKERS[t.name].images]


def log_image(accelerator: Accelerator, name: str, tag: str, image: Image.Image, step: int) -> None:
    """Send one picture to the started tracker `name`."""
    if TRACKERS[name].images == "accelerate":
        accelerator.get_tracker(name).log_images({tag: [image]}, step=step)
        return
    _OWN_IMAGE_CALLS[name](accelerator.get_tracker(name, unwrap=True), tag, image, step)


def _tensorboard(writer: Any, tag: str, image: Image.Image, step: int) -> None:
    import numpy as np

    writer.add_image(tag, np.asarray(image), global_step=step, dataformats="HWC")
    writer.flush()


def _mlflow(run: Any, tag: str, image: Image.Image, step: int) -> None:
    import mlflow

    mlflow.log_image(image, key=tag, step=step)


def _trackio(run: Any, tag: str, image: Image.Image, step: int) -> None:
    import trackio

    trackio.log({tag: trackio.Image(image)}, step=step)


def _comet_ml(experiment: Any, tag: str, image: Image.Image, step: int) -> None:
    experiment.log_image(image, name=tag, step=step)


def _dvclive(live: Any, tag: str, image: Image.Image, step: int) -> None:
    live.log_image(f"{tag}.png", image)


_OWN_IMAGE_CALLS: dict[str, Callable[[Any, str, Any, int], None]] = {
    "tensorboard": _tensorboard,
    "mlflow": _mlflow,
    "trackio": _trackio,
    "comet_ml": _comet_ml,
    "dvclive": _dvclive,
}
