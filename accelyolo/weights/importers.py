"""Bring your own weights: turn a YOLOv5 / YOLOv8 / YOLO11 checkpoint of another tool into our model.

Sources (read by `pt_reader.read_pt`, which runs none of the file's code):

- ultralytics detection checkpoints (`yolov8n.pt`, `yolo11s.pt`, a fine-tuned `best.pt`): a dict whose
  `ema` or `model` entry is a pickled `ultralytics.nn.tasks.DetectionModel`, half or float;
- the YOLOv5 repository's checkpoints (`yolov5s.pt`): the same dict shape around `models.yolo.DetectionModel`
  (or `models.yolo.Model`), whose Detect layer carries the anchors (in grid cells) and strides;
- a plain state dict of one of those models (`model.<layer>.*` names), as a torch.save'd dict or as
  `.safetensors`.

The family that owns the layout renames the tensors (`ModelFamily.import_state_dict`); the registered
variant whose shapes all match is built and loaded strictly, so an import either reproduces the source
model tensor for tensor or fails with the first mismatch.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from accelyolo.core.errors import AccelyoloError
from accelyolo.families import build_model, get_family, list_families, list_models
from accelyolo.models.yolo import STRIDES, YOLO
from accelyolo.weights.pt_reader import PtReadError, Stub, read_pt, stub_state_dict

__all__ = [
    "FOREIGN_SUFFIXES",
    "WeightsImportError",
    "ImportedWeights",
    "import_weights",
    "is_foreign_weights",
    "load_weights",
    "save_imported",
    "weights_for_fine_tuning",
]

LOGGER = logging.getLogger("accelyolo")

FOREIGN_SUFFIXES = (".pt", ".pth")


class WeightsImportError(AccelyoloError, ValueError):
    """A weights file that cannot be imported: what is wrong with it and what to do."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


@dataclass
class ImportedWeights:
    """An imported model with what came along from the source file."""

    model: YOLO
    names: list[str]
    source: str  # "ultralytics", "yolov5", "state_dict"
    entry: str | None  # which checkpoint entry held the model ("ema" / "model"), None for a state dict
    details: dict[str, Any] = field(default_factory=dict)

    def metadata(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Bundle metadata: the build keywords, names, and where the weights came from."""
        return {
            "model": dict(self.model.config),
            "names": list(self.names),
            "imported": {"source": self.source, "file": Path(path).name, "entry": self.entry, **self.details},
        }


def is_foreign_weights(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a weights file to import (a torch.save file) rather than one of our bundles."""
    return Path(path).suffix.lower() in FOREIGN_SUFFIXES


def _names_list(names: Any, nc: int) -> list[str]:
    """Class names from a dict {0: "person"} or a list; generic names when absent or of the wrong length."""
    if isinstance(names, dict):
        try:
            names = [names[i] for i in range(nc)]
        except KeyError:
            names = None
    if isinstance(names, list | tuple) and len(names) == nc and all(isinstance(n, str) for n in names):
        return list(names)
    return [f"class{i}" for i in range(nc)]


def _find_model(obj: Any, path: Path) -> tuple[Stub | dict[str, torch.Tensor], str | None]:
    """The model (a module stand-in) or state dict inside a checkpoint object, and its entry name."""
    if isinstance(obj, Stub):
        return obj, None
    if isinstance(obj, dict):
        for entry in ("ema", "model"):  # ultralytics/YOLOv5 keep the EMA as the better weights
            if isinstance(obj.get(entry), Stub):
                return obj[entry], entry
        for entry in ("state_dict", "model_state_dict", "model"):
            value = obj.get(entry)
            if isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
                return value, entry
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj, None
    raise WeightsImportError(
        path,
        f"holds a {type(obj).__name__} with no model: expected a checkpoint dict with an 'ema' or 'model' entry "
        "(ultralytics / YOLOv5) or a state dict of tensors",
    )


def _source_kind(module: Stub) -> str:
    name = module.stub_name
    if name.startswith("ultralytics."):
        return "ultralytics"
    if name.startswith("models."):
        return "yolov5"
    return "module"


def _check_strides(module: Stub, path: Path) -> None:
    stride = module.attr("stride")
    if isinstance(stride, torch.Tensor) and tuple(stride.float().tolist()) != STRIDES:
        raise WeightsImportError(
            path, f"has strides {stride.tolist()}; only P3-P5 models with strides {STRIDES} import"
        )


def _match_variant(family: str, state: dict[str, torch.Tensor], nc: int, path: Path) -> YOLO:
    """The registered variant of `family` whose state dict has exactly these names and shapes, loaded."""
    want = {k: tuple(v.shape) for k, v in state.items()}
    closest, closest_diff = None, None
    for name in list_models(family):
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            candidate = build_model(name, nc=nc)
        have = {k: tuple(v.shape) for k, v in candidate.state_dict().items()}
        diff = sorted(k for k in have.keys() | want.keys() if have.get(k) != want.get(k))
        if not diff:
            model = build_model(name, nc=nc)
            model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
            return model.eval()
        if closest_diff is None or len(diff) < len(closest_diff):
            closest, closest_diff = name, diff
    first = closest_diff[0] if closest_diff else "?"
    raise WeightsImportError(
        path,
        f"its tensors match no registered {family} model (closest: {closest}, {len(closest_diff or [])} names or "
        f"shapes differ, first {first!r}: file {want.get(first)}, model "
        f"{'absent' if first not in want else 'other'}); register a variant of these multipliers with "
        "accelyolo.families.register_model",
    )


def _family_state(source: dict[str, torch.Tensor], path: Path) -> tuple[str, dict[str, torch.Tensor], int]:
    """Ask every family whether the source layout is one of its own; the first that claims it renames it."""
    for family in list_families():
        try:
            claimed = get_family(family).import_state_dict(source)
        except KeyError as error:
            raise WeightsImportError(path, f"{family} layout with an unexpected tensor: {error.args[0]}") from None
        if claimed is not None:
            state, nc = claimed
            return family, state, nc
    sample = ", ".join(list(source)[:3])
    raise WeightsImportError(
        path,
        f"not a layout accelyolo imports (names start {sample}); supported: YOLOv5 v6+ (models.yolo), "
        "ultralytics YOLOv8 and YOLO11 detection models, and state dicts of those with model.<layer>.* names",
    )


def import_weights(path: str | os.PathLike[str]) -> ImportedWeights:
    """Read another tool's detection checkpoint (or state dict) into the matching registered model.

    Raises:
        WeightsImportError: unreadable or refused file (`PtReadError` says which name was refused), a model of
            another architecture or task, or shapes no registered variant has.
    """
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        obj, module_info = _read_safetensors(path), None
        source, entry = _find_model(obj, path)
    else:
        try:
            obj = read_pt(path)
        except PtReadError as error:
            raise WeightsImportError(path, str(error).split(": ", 1)[-1]) from None
        source, entry = _find_model(obj, path)
    names_attr, details = None, {}
    kind = "state_dict"
    if isinstance(source, Stub):
        module_info = source
        kind = _source_kind(source)
        _check_strides(source, path)
        names_attr = source.attr("names")
        source = stub_state_dict(source)
        details["source_class"] = module_info.stub_name
    elif isinstance(obj, dict) and "names" in obj:
        names_attr = obj.get("names")
    family, state, nc = _family_state(dict(source), path)
    model = _match_variant(family, state, nc, path)
    details["source_dtype"] = str(next(iter(source.values())).dtype).replace("torch.", "")
    return ImportedWeights(model, _names_list(names_attr, nc), kind, entry, details)


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            if "accelyolo.format" in metadata:
                raise WeightsImportError(path, "is already an accelyolo bundle; pass it to --weights as it is")
            state: dict[str, Any] = {k: file.get_tensor(k) for k in file.keys()}  # noqa: SIM118
    except WeightsImportError:
        raise
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise WeightsImportError(path, f"not a readable safetensors file ({error})") from None
    if "names" in metadata:  # optional: a JSON list or {index: name} of class names
        try:
            names = json.loads(metadata["names"])
            state = {
                "model": state,
                "names": {int(k): v for k, v in names.items()} if isinstance(names, dict) else names,
            }
        except (json.JSONDecodeError, ValueError, AttributeError):
            pass
    return state


def load_weights(path: str | os.PathLike[str]) -> tuple[YOLO, dict[str, Any]]:
    """(model in eval mode, metadata) from an accelyolo bundle (EMA preferred), another tool's `.pt`, or a
    pretrained folder / Hub id (`accelyolo.weights.hub`)."""
    from accelyolo.weights.pretrained import from_pretrained, is_pretrained_reference

    if is_pretrained_reference(path):
        return from_pretrained(path)
    if is_foreign_weights(path):
        imported = import_weights(path)
        return imported.model.eval(), imported.metadata(path)
    from accelyolo.weights.checkpoint import load_checkpoint

    return load_checkpoint(path, device="cpu", prefer_ema=True)


def weights_for_fine_tuning(path: str | os.PathLike[str], model_name: str) -> dict[str, torch.Tensor]:
    """The state dict `--weights` starts a run from: another tool's `.pt` (imported, none of its code runs),
    a pretrained folder or Hub id, or an accelyolo bundle (its EMA weights when it has them). Warns when an
    imported or pretrained file holds another architecture than the one being trained (only the tensors
    whose names and shapes fit will transfer)."""
    from accelyolo.weights.pretrained import from_pretrained, is_pretrained_reference

    if is_pretrained_reference(path):
        model = from_pretrained(path)[0]
    elif is_foreign_weights(path):
        model = import_weights(path).model
    else:
        from accelyolo.weights.checkpoint import load_checkpoint_bundle

        bundle = load_checkpoint_bundle(path)
        return bundle.ema_state or bundle.model_state
    if model.config["name"] != model_name:
        LOGGER.warning(
            "weights: %s holds a %s; training a %s takes only the tensors that fit (--model %s trains the "
            "architecture of the file)",
            path,
            model.config["name"],
            model_name,
            model.config["name"],
        )
    return model.state_dict()


def save_imported(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> tuple[Path, ImportedWeights]:
    """`accelyolo import`: write the imported model as an inference bundle (loads with `load_checkpoint`)."""
    from accelyolo.weights.checkpoint import save_checkpoint

    imported = import_weights(src)
    state = {k: v.detach().clone() for k, v in imported.model.state_dict().items()}
    return save_checkpoint(dst, model_state=state, metadata=imported.metadata(src)), imported
