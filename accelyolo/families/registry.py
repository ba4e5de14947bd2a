"""The registry of model families and of named model variants (timm's `register_model` / `create_model`).

A *family* (anchor-free YOLOv8, anchor-based YOLOv5, ...) is one `ModelFamily` object that owns
everything that varies between architectures: how a model is built, which loss trains it, the default
loss gains, the hyperparameters only it reads, and the checks it runs on a model before training (the
anchor fit of the anchor-based family). A *variant* (`yolov8n`, `yolov5s`, ...) is a name mapped to its
family and scale multipliers. Nothing outside a family's own module asks which family a model is: code
that needs family behaviour calls `family_of(model)` and uses the object it gets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from accelerate.utils import extract_model_from_parallel
from torch import nn

from accelyolo.core.config import ConfigError
from accelyolo.core.errors import ModelNameError
from accelyolo.core.hyp import HYPERPARAMETERS
from accelyolo.models.yolo import YOLO

__all__ = [
    "ModelFamily",
    "ModelSpec",
    "build_loss",
    "build_model",
    "family_of",
    "get_family",
    "list_families",
    "list_models",
    "model_spec",
    "register_family",
    "register_model",
]

LOGGER = logging.getLogger("accelyolo")


@dataclass(frozen=True)
class ModelSpec:
    """One registered variant: its family, scale multipliers and family-specific build keywords."""

    family: str
    depth: float
    width: float
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"max_channels": 1024}


class ModelFamily:
    """What a model family owns. Subclass it, then `register_family(MyFamily())`.

    Attributes:
        name: the family's name, stored on every model it builds as `model.family`.
        loss_gains: default gain of each loss term (`None` in the config means "this default").
        own_options: hyperparameters that only this family's loss reads.
        distill_kind: families of one kind make predictions that distillation can pair grid point by grid
            point (see `distill_layout`); None: this family's models cannot be distilled.
    """

    name: ClassVar[str]
    loss_gains: ClassVar[Mapping[str, float]] = {}
    own_options: ClassVar[tuple[str, ...]] = ()
    distill_kind: ClassVar[str | None] = None

    def build(self, nc: int, width: float, depth: float, **extra: Any) -> YOLO:
        """The model at these multipliers (`extra`: the variant's family-specific keywords)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build()")

    def build_loss(self, model: nn.Module, hyp: Mapping[str, Any], imgsz: int) -> nn.Module:
        """The training loss: a module called as `total, items = loss(preds, targets)`, with `.names`."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_loss()")

    def prepare_for_training(
        self,
        model: nn.Module,
        labels: list[np.ndarray],
        shapes: np.ndarray | None,
        imgsz: int,
        hyp: Mapping[str, Any],
        seed: int,
    ) -> None:
        """Checks or fits run on a fresh (not resumed) model against the training labels; none by default."""

    def check_options(self, hyp: Mapping[str, Any]) -> None:
        """Refuse a hyperparameter that only another family reads, set to other than its default.

        A default value stays silent (every config carries all keys); a set one would do nothing here.
        """
        for other in _FAMILIES.values():
            if other.name == self.name:
                continue
            for key in other.own_options:
                if key in self.own_options or key not in hyp:
                    continue
                default = HYPERPARAMETERS[key].default if key in HYPERPARAMETERS else None
                if hyp[key] is not None and hyp[key] != default:
                    raise ConfigError(
                        f"'{key}' = {hyp[key]} applies only to {other.name} models "
                        f"({', '.join(list_models(other.name))}), and this model is {self.name}: "
                        f"remove '{key}' from the recipe, hyp file or flags, or choose a model of that family."
                    )

    def distill_layout(self, model: nn.Module) -> dict[str, Any]:
        """How `model` lays out what distillation compares (strides, bins, anchors per cell). A teacher is
        accepted for a student when both families have the same `distill_kind` (their predictions mean
        the same thing per grid point) and the models the same layout, whatever their sizes."""
        return {}

    def distill_logits(self, model: nn.Module, maps: list[Any]) -> tuple[Any, Any]:
        """What knowledge distillation compares, from the head's raw level maps (`head.raw_maps`):
        `(class_logits (B, N, nc), box_logits (B, N, 4, reg_max) or None)`; None when the family's boxes
        are not distributions."""
        raise NotImplementedError(f"{type(self).__name__} does not support distillation (distill_logits)")

    def import_state_dict(self, source: Mapping[str, Any]) -> tuple[dict[str, Any], int] | None:
        """This family's state dict and class count from another tool's checkpoint names (`model.<layer>.*`),
        or None when `source` is not laid out as a model of this family (see `accelyolo.weights`)."""
        return None

    def option(self, hyp: Mapping[str, Any], key: str) -> float:
        """The configured value of hyperparameter `key`; when it is unset (None or absent), this family's
        default for a loss gain and the hyperparameter table's default for anything else."""
        value = hyp.get(key)
        if value is None:
            value = self.loss_gains[key] if key in self.loss_gains else HYPERPARAMETERS[key].default
        return float(value)


_FAMILIES: dict[str, ModelFamily] = {}
_MODELS: dict[str, ModelSpec] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add a family object under `family.name`; a taken name is an error."""
    if family.name in _FAMILIES:
        raise ValueError(f"register_family: a family named {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def register_model(name: str, spec: ModelSpec) -> None:
    """Add a named variant of a registered family; a taken name is an error (pick another name)."""
    if name in _MODELS:
        raise ValueError(f"register_model: a model named {name!r} is already registered")
    if spec.family not in _FAMILIES:
        raise ValueError(
            f"register_model: {name!r} names the unknown family {spec.family!r}; "
            f"registered: {', '.join(sorted(_FAMILIES))}"
        )
    _MODELS[name] = spec


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def get_family(name: str) -> ModelFamily:
    """The family object registered under `name`."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown model family {name!r}; registered: {', '.join(list_families())}")
    return _FAMILIES[name]


def family_of(model: nn.Module) -> ModelFamily:
    """The family that built `model` (DDP / compiled wrappers are looked through)."""
    model = extract_model_from_parallel(model, keep_torch_compile=False)
    name = getattr(model, "family", None)
    if name is None:
        raise ValueError(
            f"{type(model).__name__} has no 'family' attribute; build models with "
            "accelyolo.families.build_model (or set .family to a registered family name)"
        )
    return get_family(name)


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, optionally of one family."""
    return sorted(k for k, v in _MODELS.items() if family is None or v.family == family)


def model_spec(name: str) -> ModelSpec:
    """The family and multipliers of a registered name."""
    if name not in _MODELS:
        raise ModelNameError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    return _MODELS[name]


def build_model(
    name: str,
    nc: int = 80,
    width: float | None = None,
    depth: float | None = None,
    seg_classes: int = 0,
    **extra: Any,
) -> YOLO:
    """Build a registered variant (`create_model` in timm's words).

    Args:
        name: a registered name, e.g. "yolov8n" or "yolov5s" (see `list_models()`).
        nc: number of classes.
        width, depth: override the variant's multipliers.
        seg_classes: K > 0 adds a semantic segmentation head of K classes on the neck (any family,
            see `accelyolo.models.seghead`); 0 builds the plain detector, unchanged.
        extra: override family-specific keywords of the variant (e.g. `max_channels`); a keyword the
            family does not take is an error.

    Returns:
        A `YOLO` whose `config` holds these keywords, so `build_model(**model.config)` rebuilds it.
    """
    spec = model_spec(name)
    unknown = sorted(set(extra) - set(spec.extra))
    if unknown:
        raise ValueError(
            f"build_model: {', '.join(unknown)} do not apply to {name!r} (family {spec.family}; "
            f"it takes {', '.join(sorted(spec.extra)) or 'no extra keywords'})"
        )
    if int(nc) < 1 or (width is not None and width <= 0) or (depth is not None and depth <= 0):
        raise ValueError(f"build_model: nc must be >= 1 and width, depth > 0; got {nc=}, {width=}, {depth=}")
    keywords = {**spec.extra, **{k: v for k, v in extra.items() if v is not None}}
    config = {
        "name": name,
        "nc": int(nc),
        "width": float(width or spec.width),
        "depth": float(depth or spec.depth),
        **keywords,
    }
    model = get_family(spec.family).build(config["nc"], config["width"], config["depth"], **keywords)
    if seg_classes:
        model.add_segmentation_head(int(seg_classes))
        config["seg_classes"] = int(seg_classes)  # only then, so a detector's config stays as it was
    model.config = config
    return model


def build_loss(model: nn.Module, imgsz: int = 640, **hyp: Any) -> nn.Module:
    """The loss of `model`'s family, configured from hyperparameters named as in `TrainConfig`
    (`box`, `cls`, `dfl`, `obj`, `cls_pw`, `label_smoothing`, ...; unset gains take the family default)."""
    model = extract_model_from_parallel(model, keep_torch_compile=False)
    return family_of(model).build_loss(model, hyp, imgsz)
