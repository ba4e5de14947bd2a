"""accelyolo: YOLO object-detection training on HuggingFace Accelerate.

Importing the package is cheap and changes no global state; the heavy modules are loaded by the
functions below when they are first called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from accelyolo.training.experiment import Experiment
    from accelyolo.training.trainer import FitResult

__all__ = [
    "Experiment",
    "__version__",
    "build_model",
    "evolve",
    "export",
    "fit",
    "from_pretrained",
    "import_weights",
    "load_checkpoint",
    "predict",
    "push_to_hub",
    "save_pretrained",
    "validate",
]


def __getattr__(name: str) -> Any:
    """`accelyolo.Experiment` (the base of `fit(experiment=...)`), imported when first asked for."""
    if name == "Experiment":
        from accelyolo.training.experiment import Experiment

        return Experiment
    raise AttributeError(f"module 'accelyolo' has no attribute {name!r}")


def fit(recipe: str | None = None, *, num_processes: int | None = None, **overrides: Any) -> FitResult:
    """Train a model; see `accelyolo.commands.fit.fit` for the arguments. `num_processes=N` trains on N
    processes of this machine (from a script or a notebook; `accelyolo.commands.launch.launch`) and returns
    the main one's result."""
    if num_processes is not None:
        from accelyolo.commands.launch import launch

        return launch(recipe, num_processes=num_processes, **overrides)
    from accelyolo.commands.fit import fit as _fit

    return _fit(recipe, **overrides)


def evolve(recipe: str | None = None, **kwargs: Any):
    """Evolve hyperparameters, one training per generation; see `accelyolo.commands.evolve.evolve`."""
    from accelyolo.commands.evolve import evolve as _evolve

    return _evolve(recipe, **kwargs)


def build_model(name: str, nc: int = 80, **kwargs: Any):
    """Build a registered model (`yolov8n` ... `yolov8x`, `yolov5n` ... `yolov5x`, `yolo11n` ... `yolo11x`)."""
    from accelyolo.families import build_model as _build_model

    return _build_model(name, nc=nc, **kwargs)


def load_checkpoint(path: str, **kwargs: Any):
    """Load a `.safetensors` bundle; returns `(model, metadata)`."""
    from accelyolo.weights.checkpoint import load_checkpoint as _load

    return _load(path, **kwargs)


def validate(**kwargs: Any):
    """Validate a checkpoint on a dataset; see `accelyolo.commands.validate.validate`."""
    from accelyolo.commands.validate import validate as _validate

    return _validate(**kwargs)


def predict(**kwargs: Any):
    """Run inference on images; see `accelyolo.commands.predict.predict`."""
    from accelyolo.commands.predict import predict as _predict

    return _predict(**kwargs)


def export(weights: str, **kwargs: Any):
    """Export a checkpoint (or a YOLOv5/v8/11 `.pt`) to ONNX; see `accelyolo.commands.export.export`."""
    from accelyolo.commands.export import export as _export

    return _export(weights, **kwargs)


def import_weights(path: str):
    """Read a YOLOv5/v8/11 `.pt` (or state dict) without running its code; see `accelyolo.weights.importers`."""
    from accelyolo.weights.importers import import_weights as _import

    return _import(path)


def from_pretrained(reference: str, **kwargs: Any):
    """`(model, metadata)` from a Hub id (`org/name`) or a folder written by `save_pretrained`; see
    `accelyolo.weights.hub.from_pretrained`."""
    from accelyolo.weights.pretrained import from_pretrained as _from_pretrained

    return _from_pretrained(reference, **kwargs)


def save_pretrained(weights: str, save_directory: str, **kwargs: Any):
    """Write a checkpoint as `model.safetensors` + `config.json` + `README.md` (model card); see
    `accelyolo.weights.hub.save_pretrained`."""
    from accelyolo.weights.hub import save_pretrained as _save_pretrained

    return _save_pretrained(weights, save_directory, **kwargs)


def push_to_hub(weights: str, repo_id: str, **kwargs: Any) -> str:
    """Upload a checkpoint as a Hub model repository; see `accelyolo.weights.hub.push_to_hub`."""
    from accelyolo.weights.hub import push_to_hub as _push_to_hub

    return _push_to_hub(weights, repo_id, **kwargs)
