"""Named model variants and the `build_model` factory.

The scale table lives here (and, for reading, in `recipes/models/yolov8.yaml` / `yolov5.yaml`; a test
keeps them equal). `yolov8t` / `yolov5t` are tiny-width variants of the real architectures for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from accelyolo.models.yolo import YOLO

__all__ = ["COCO_ANCHORS", "ModelSpec", "build_model", "list_models", "model_spec", "register_model"]

# YOLOv5 default anchors (w, h pixels) for P3/8, P4/16, P5/32, fitted on COCO.
COCO_ANCHORS = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)


@dataclass(frozen=True)
class ModelSpec:
    """One registered variant: its family and scale multipliers."""

    family: str  # "anchor_free" | "anchor_based"
    depth: float
    width: float
    max_channels: int | None = None  # anchor-free only


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, spec: ModelSpec) -> None:
    """Add a named variant; registering a taken name is an error (pick another name)."""
    if name in _REGISTRY:
        raise ValueError(f"register_model: a model named {name!r} is already registered")
    _REGISTRY[name] = spec


# Anchor-free (YOLOv8) scales: depth, width, max channels.
for _scale, (_d, _w, _mc) in {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.25, 512),
    "t": (0.33, 0.0625, 1024),  # tiny, for tests
}.items():
    register_model(f"yolov8{_scale}", ModelSpec("anchor_free", _d, _w, _mc))

# Anchor-based (YOLOv5 v6.0+) scales: depth, width.
for _scale, (_d, _w) in {
    "n": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.00, 1.00),
    "x": (1.33, 1.25),
    "t": (0.33, 0.0625),  # tiny, for tests
}.items():
    register_model(f"yolov5{_scale}", ModelSpec("anchor_based", _d, _w))


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, optionally of one family ("anchor_free" or "anchor_based")."""
    return sorted(k for k, v in _REGISTRY.items() if family is None or v.family == family)


def model_spec(name: str) -> ModelSpec:
    """The family and multipliers of a registered name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    return _REGISTRY[name]


def build_model(
    name: str,
    nc: int = 80,
    width: float | None = None,
    depth: float | None = None,
    max_channels: int | None = None,
) -> YOLO:
    """Build a registered model.

    Args:
        name: a registered name, e.g. "yolov8n" or "yolov5s" (see `list_models()`).
        nc: number of classes.
        width, depth, max_channels: override the variant's multipliers (tests use tiny widths).

    Returns:
        A `YOLO` whose `config` holds these keywords, so `build_model(**model.config)` rebuilds it.
    """
    spec = model_spec(name)
    config: dict = {
        "name": name,
        "nc": int(nc),
        "width": float(width or spec.width),
        "depth": float(depth or spec.depth),
    }
    if spec.family == "anchor_free":
        config["max_channels"] = int(max_channels or spec.max_channels)
        return YOLO(
            "anchor_free",
            config["nc"],
            config["width"],
            config["depth"],
            max_channels=config["max_channels"],
            config=config,
        )
    if max_channels is not None:
        raise ValueError(f"build_model: max_channels applies to anchor-free models only, not {name!r}")
    return YOLO("anchor_based", config["nc"], config["width"], config["depth"], anchors=COCO_ANCHORS, config=config)
