"""Checkpoint bundles: one `.safetensors` file holding everything needed to resume or deploy.

Layout of a bundle:

- tensors: `model.<name>`, `ema.<name>`, `optimizer.state.<param index>.<key>`, `scaler.*`,
  `rng.<rank>.torch`, `rng.<rank>.cuda.<i>`, `rng.<rank>.numpy.keys`, `rng.<rank>.python.state`;
- safetensors metadata (a `dict[str, str]`), every value a JSON string:
  `accelyolo.format` (name + version), `accelyolo.versions` (torch, accelerate, safetensors,
  accelyolo), `accelyolo.manifest` (the shape of every nested structure: dicts with their key
  types and order, lists, tuples, python scalars, and which tensor sits where), `metadata` (the
  caller's JSON-able dict: epoch, global step, best fitness, EMA updates, LR schedule or scheduler state,
  config, class names, model config, ...) and `optimizer.param_groups` (a readable copy; the
  manifest is what the loader uses, since JSON alone would turn Adam's `betas` tuple into a list).

Only tensors and JSON are ever written or read: nothing is pickled, so a checkpoint from an
untrusted source cannot run code. Files are written atomically (`accelyolo.core.fileio`: temporary
file in the same folder, fsync, `os.replace`): a crash while saving leaves the previous `last.safetensors` intact.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from accelyolo.core.errors import AccelyoloError
from accelyolo.core.fileio import copy_atomically, replace_atomically

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointBundle",
    "CheckpointError",
    "load_checkpoint",
    "load_checkpoint_bundle",
    "save_checkpoint",
    "strip_checkpoint",
]

FORMAT_NAME = "accelyolo-checkpoint"
FORMAT_VERSION = 2  # 2: epochs in metadata are 1-based (epochs completed), scheduler state saved
_SECTIONS = ("model", "ema", "optimizer", "scaler", "rng", "extra")
# Metadata keys only a resumed training run needs; a stripped inference file drops them. "schedule" is
# written by the current trainer, "scheduler" (LR scheduler state) by the refactored one. Optimizer,
# scaler and RNG state are tensor sections, not metadata keys: stripping drops those sections.
_TRAINING_ONLY_METADATA = ("scheduler", "schedule", "ema_updates", "history")
_MAX_HEADER_BYTES = 100_000_000  # safetensors refuses larger headers too


class CheckpointError(AccelyoloError, ValueError):
    """A checkpoint file is missing, damaged, foreign or from a newer accelyolo."""

    def __init__(self, path: str | os.PathLike[str], problem: str, advice: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}. {advice}")


@dataclass
class CheckpointBundle:
    """Everything a bundle holds, rebuilt into the structures that were saved.

    `optimizer_state` has the exact `optimizer.state_dict()` structure (int state keys, tuples,
    python scalar types, tensor dtypes and shapes), ready for `optimizer.load_state_dict`.
    `rng_states` holds one `accelyolo.core.rng.capture_rng_state()` dict per rank, always on the CPU.
    """

    path: Path
    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None = None
    optimizer_state: dict[str, Any] | None = None
    scaler_state: dict[str, Any] | None = None
    rng_states: list[dict[str, Any]] | None = None
    extra_state: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


# ----------------------------------------------------------------------------------- saving


def _encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Turn a nested structure into a JSON manifest node, moving its tensors into `tensors`.

    Node forms: `{"tensor": name}`, `{"value": scalar}`, `{"list": [...]}`, `{"tuple": [...]}`,
    `{"dict": [[key, node], ...], "ordered": bool, "module_metadata": ...}`. Dict keys keep their
    type (str or int: optimizer state is keyed by parameter index) and their order.
    """
    if isinstance(obj, torch.Tensor):
        name, suffix = key, 1
        while name in tensors:  # two paths flattening to the same dotted name
            name, suffix = f"{key}#{suffix}", suffix + 1
        # A fresh contiguous CPU copy: no shared storage, no views, nothing on a GPU.
        tensors[name] = obj.detach().to("cpu", copy=True).contiguous()
        return {"tensor": name}
    if obj is None or isinstance(obj, bool | int | float | str):
        return {"value": obj}
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy scalar
        return {"value": obj.item()}
    if isinstance(obj, list | tuple):
        kind = "tuple" if isinstance(obj, tuple) else "list"
        return {kind: [_encode(item, f"{key}.{i}", tensors) for i, item in enumerate(obj)]}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{key}: dict key {k!r} is a {type(k).__name__}; use str or int")
            items.append([k, _encode(v, f"{key}.{k}", tensors)])
        node: dict[str, Any] = {"dict": items, "ordered": isinstance(obj, OrderedDict)}
        module_metadata = getattr(obj, "_metadata", None)  # nn.Module.state_dict() versions
        if isinstance(module_metadata, dict):
            node["module_metadata"] = module_metadata
        return node
    raise TypeError(
        f"{key}: cannot store a {type(obj).__name__} in a checkpoint; use tensors, numbers, "
        "strings, None, lists, tuples or dicts"
    )


def _json_default(obj: Any) -> Any:
    """JSON fallback for user metadata: numpy scalars and arrays, tensors, paths."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(
        f"metadata value of type {type(obj).__name__} is not JSON-able; store numbers, "
        "strings, lists and dicts (tensors belong in model/ema/optimizer state)"
    )


def _versions() -> dict[str, str]:
    """Library versions recorded in every bundle, to explain odd behaviour after upgrades."""
    import safetensors

    from accelyolo import __version__

    versions = {"accelyolo": __version__, "torch": torch.__version__}
    versions["safetensors"] = safetensors.__version__
    try:
        import accelerate

        versions["accelerate"] = accelerate.__version__
    except ImportError:  # pragma: no cover - accelerate is a dependency
        versions["accelerate"] = "not installed"
    return versions


def _write_atomically(tensors: dict[str, torch.Tensor], header: dict[str, str], path: Path) -> None:
    """Write a safetensors file atomically (see `accelyolo.core.fileio.replace_atomically`)."""
    replace_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def copy_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy a finished bundle (e.g. last -> best) with the same atomic replace as a save."""
    return copy_atomically(src, dst)


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
    scaler_state: dict[str, Any] | None = None,
    rng_states: list[dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
    extra_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint bundle atomically and return its path.

    Args:
        path: destination, e.g. `runs/train/exp/weights/last.safetensors`.
        model_state: `model.state_dict()` of the unwrapped model.
        ema_state: `ModelEMA.state_dict()`; put `ema.updates` in `metadata["ema_updates"]`.
        optimizer_state: `optimizer.state_dict()`.
        scaler_state: `GradScaler.state_dict()` (`{}` when the scaler is disabled).
        rng_states: one `accelyolo.core.rng.capture_rng_state()` per rank, in rank order.
        metadata: JSON-able dict: epoch, global_step, best_fitness, schedule or scheduler state, config,
            names, `"model"` (the `build_model` keyword arguments that `load_checkpoint` uses).
        extra_state: training-only state of a trainer subclass (e.g. distillation adapters);
            dropped by `strip_checkpoint`.
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    sections = {
        "model": model_state,
        "ema": ema_state,
        "optimizer": optimizer_state,
        "scaler": scaler_state,
        "rng": rng_states,
        "extra": extra_state,
    }
    manifest = {name: None if value is None else _encode(value, name, tensors) for name, value in sections.items()}
    header = {
        "accelyolo.format": json.dumps({"name": FORMAT_NAME, "version": FORMAT_VERSION}),
        "accelyolo.versions": json.dumps(_versions()),
        "accelyolo.manifest": json.dumps(manifest),
        "metadata": json.dumps(metadata or {}, default=_json_default),
    }
    if optimizer_state is not None:
        groups = optimizer_state.get("param_groups", [])
        header["optimizer.param_groups"] = json.dumps(groups, default=_json_default)
    _write_atomically(tensors, header, path)
    return path


# ----------------------------------------------------------------------------------- loading

_PICKLE_PROBLEM = "this looks like a PyTorch pickle checkpoint; accelyolo reads only .safetensors bundles it wrote"
_PICKLE_ADVICE = (
    "Unpickling a file can run arbitrary code, so accelyolo never does. For YOLOv5, YOLOv8 and YOLO11 "
    "weights, pass the .pt to --weights (converted on the fly) or convert it once with "
    "'accelyolo import SRC.pt -o OUT.safetensors'; both read it without running any of its code"
)
_OTHER_CHECKPOINT = "use another checkpoint of the run (best.safetensors, or an earlier one)"
_CUT_OFF = f"The file was cut off while being written or copied; {_OTHER_CHECKPOINT}"
_NOT_SAFETENSORS = "not a safetensors file (random or foreign bytes where the safetensors header should be)"
_NOT_SAFETENSORS_ADVICE = "Pass a .safetensors bundle written by accelyolo (<run>/weights/last.safetensors)"


def _read_header(path: Path) -> dict[str, Any]:
    """Validate the raw file and return its safetensors header (tensor table + metadata).

    Every way a file can be wrong is checked here, before safetensors parses it, so the error
    says in words what is wrong and what to do instead of a parser message.
    """
    if not path.exists():
        raise CheckpointError(path, "no such file", "Check the path; runs save to <run>/weights/")
    if not path.is_file():
        raise CheckpointError(path, "is not a file", "Pass the path of a .safetensors file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "the file is empty (0 bytes)", _CUT_OFF)
    with path.open("rb") as file:
        start = file.read(8)
        # A safetensors file starts with the header length as a little-endian u64.
        header_size = int.from_bytes(start, "little") if len(start) == 8 else -1
        _reject_foreign_start(path, start, header_size, file.read(1))
        file.seek(8)
        if 8 + header_size > size:
            raise CheckpointError(
                path, f"truncated: the header needs {8 + header_size} bytes, the file has {size}", _CUT_OFF
            )
        raw = file.read(header_size)
    try:
        header = json.loads(raw.decode("utf-8"))
        data_end = max(
            (int(info["data_offsets"][1]) for key, info in header.items() if key != "__metadata__"),
            default=0,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError, IndexError):
        raise CheckpointError(path, _NOT_SAFETENSORS, _NOT_SAFETENSORS_ADVICE) from None
    if 8 + header_size + data_end > size:
        problem = f"truncated: its header describes {8 + header_size + data_end} bytes, the file has {size}"
        raise CheckpointError(path, problem, _CUT_OFF)
    return header


def _reject_foreign_start(path: Path, start: bytes, header_size: int, first_header_byte: bytes) -> None:
    """Recognize pickle/zip files and non-safetensors bytes from the first 8 bytes and the 9th.

    A safetensors header is JSON (`{` at byte 8), and its length may itself begin with the bytes of a pickle
    protocol mark (a header of 394,368 bytes is 80 04 06 00 ...): with a plausible length and `{` next, the file
    is read as safetensors, whatever its first two bytes.
    """
    plausible = 2 <= header_size <= _MAX_HEADER_BYTES
    safetensors_like = plausible and first_header_byte == b"{"
    is_zip = start.startswith(b"PK\x03\x04") and not safetensors_like  # torch.save's default zip container
    is_pickle = start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and not safetensors_like
    if is_zip or is_pickle or (not plausible and path.suffix in (".pt", ".pth", ".ckpt", ".bin")):
        raise CheckpointError(path, _PICKLE_PROBLEM, _PICKLE_ADVICE)
    if header_size == -1:
        raise CheckpointError(path, f"only {len(start)} bytes: truncated or not a checkpoint", _CUT_OFF)
    if not plausible:
        raise CheckpointError(path, _NOT_SAFETENSORS, _NOT_SAFETENSORS_ADVICE)


def _check_format(path: Path, metadata: dict[str, str]) -> int:
    """Refuse foreign safetensors files and bundles of a newer format; return the version."""
    if "accelyolo.format" not in metadata or "accelyolo.manifest" not in metadata:
        raise CheckpointError(
            path,
            "a safetensors file without accelyolo metadata (not a bundle written by accelyolo)",
            "Load plain weights with safetensors.torch.load_file and model.load_state_dict, or "
            "pass a checkpoint that accelyolo saved (<run>/weights/last.safetensors)",
        )
    try:
        fmt = json.loads(metadata["accelyolo.format"])
        name, version = fmt["name"], int(fmt["version"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise CheckpointError(path, "damaged 'accelyolo.format' metadata", _OTHER_CHECKPOINT.capitalize()) from None
    if name != FORMAT_NAME:
        raise CheckpointError(path, f"unknown format '{name}' (expected '{FORMAT_NAME}')", _OTHER_CHECKPOINT)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            path,
            f"written by a newer accelyolo (format version {version}; this version reads up to {FORMAT_VERSION})",
            "Upgrade accelyolo (pip install -U accelyolo) to read it",
        )
    return version


def _decode(node: dict[str, Any], tensors: Callable[[str], torch.Tensor]) -> Any:
    """Rebuild the structure a manifest node describes (inverse of `_encode`)."""
    if "tensor" in node:
        return tensors(node["tensor"])
    if "value" in node:
        return node["value"]
    if "list" in node:
        return [_decode(item, tensors) for item in node["list"]]
    if "tuple" in node:
        return tuple(_decode(item, tensors) for item in node["tuple"])
    if "dict" in node:
        pairs = [(key, _decode(value, tensors)) for key, value in node["dict"]]
        result: dict[Any, Any] = OrderedDict(pairs) if node.get("ordered") else dict(pairs)
        if "module_metadata" in node:
            result._metadata = node["module_metadata"]  # type: ignore[attr-defined]
        return result
    raise KeyError(f"unknown manifest node with keys {sorted(node)}")


def _load_sections(path: Path, manifest: dict[str, Any], device: str | torch.device) -> dict[str, Any]:
    """Rebuild every section the manifest lists; RNG and scaler tensors stay on the CPU."""
    sections: dict[str, Any] = {}
    with safe_open(path, framework="pt", device="cpu") as file:
        for section in _SECTIONS:
            node = manifest.get(section)
            if node is None:
                sections[section] = None
                continue
            target = "cpu" if section in ("rng", "scaler") else device
            sections[section] = _decode(node, lambda name, target=target: file.get_tensor(name).to(target))
    return sections


def read_checkpoint_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata saved with a bundle (epoch, config, names, ...), read from the header alone.

    Checks the file as `load_checkpoint_bundle` does, without reading any tensor.
    """
    path = Path(path)
    metadata = _read_header(path).get("__metadata__") or {}
    _check_format(path, metadata)
    try:
        return json.loads(metadata.get("metadata", "{}"))
    except json.JSONDecodeError as error:
        raise CheckpointError(path, f"damaged metadata ({error})", _OTHER_CHECKPOINT) from None


def load_checkpoint_bundle(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> CheckpointBundle:
    """Read a bundle written by `save_checkpoint`.

    Args:
        path: the `.safetensors` file.
        device: where model, EMA and optimizer tensors go; RNG and scaler tensors stay on the
            CPU, where torch needs generator states.

    Raises:
        CheckpointError: missing, empty, truncated or random file; a PyTorch pickle file; a
            safetensors file not written by accelyolo; a newer format version.
    """
    path = Path(path)
    header = _read_header(path)
    metadata = header.get("__metadata__") or {}
    version = _check_format(path, metadata)
    try:
        manifest = json.loads(metadata["accelyolo.manifest"])
        user_metadata = json.loads(metadata.get("metadata", "{}"))
        versions = json.loads(metadata.get("accelyolo.versions", "{}"))
        sections = _load_sections(path, manifest, device)
    except (SafetensorError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            path, f"damaged checkpoint ({type(error).__name__}: {error})", _OTHER_CHECKPOINT
        ) from None
    if sections["model"] is None:
        raise CheckpointError(path, "the bundle holds no model weights", _OTHER_CHECKPOINT)
    return CheckpointBundle(
        path=path,
        model_state=sections["model"],
        ema_state=sections["ema"],
        optimizer_state=sections["optimizer"],
        scaler_state=sections["scaler"],
        rng_states=sections["rng"],
        extra_state=sections["extra"],
        metadata=user_metadata,
        versions=versions,
        format_version=version,
    )


def strip_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str], half: bool = False) -> Path:
    """Write an inference-only file: the EMA weights (or the model's when there is no EMA).

    The weights are stored as `model.*`; optimizer, scaler, RNG and resume-only metadata (LR schedule or
    scheduler state, EMA counter, results.csv rows) are dropped, and `metadata["stripped"]` records the source.
    With `half=True` floating-point tensors are stored as float16 (half the size; load them
    into a float32 model as usual, `load_state_dict` casts).
    """
    bundle = load_checkpoint_bundle(src)
    use_ema = bundle.ema_state is not None
    weights = bundle.ema_state if use_ema else bundle.model_state
    if half:
        converted = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
        source, weights = weights, type(weights)(converted)
        if hasattr(source, "_metadata"):
            weights._metadata = source._metadata  # type: ignore[attr-defined]
    metadata = {k: v for k, v in bundle.metadata.items() if k not in _TRAINING_ONLY_METADATA}
    metadata["stripped"] = {"source": Path(src).name, "weights": "ema" if use_ema else "model"}
    metadata["stripped"]["half"] = half
    return save_checkpoint(dst, model_state=weights, metadata=metadata)


def load_checkpoint(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    prefer_ema: bool = True,
    model_factory: Callable[..., nn.Module] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a bundle was trained with and load its weights, for inference.

    Args:
        path: a full or stripped bundle.
        device: where the model goes.
        prefer_ema: load the EMA weights when the bundle has them (they validate better).
        model_factory: builds the model from `metadata["model"]` keyword arguments; defaults to
            `accelyolo.families.build_model`.

    Returns:
        `(model, metadata)`, the model in eval mode.
    """
    bundle = load_checkpoint_bundle(path, device="cpu")
    model_kwargs = bundle.metadata.get("model")
    if not isinstance(model_kwargs, dict):
        raise CheckpointError(
            path,
            'its metadata has no \'model\' entry (the build_model arguments, e.g. {"name": "yolov8n", "nc": 80})',
            "Save checkpoints with metadata['model'] set, or build the model yourself and load "
            "load_checkpoint_bundle(path).model_state into it",
        )
    if model_factory is None:
        from accelyolo.families import build_model as model_factory
    try:
        model = model_factory(**model_kwargs)
    except (TypeError, ValueError) as error:  # an unknown name, a keyword or value no registered model takes
        raise CheckpointError(
            path,
            f"its metadata['model'] {model_kwargs} builds no model ({error})",
            "Pass a bundle written by accelyolo (a run's weights/*.safetensors), or convert other weights with "
            "`accelyolo import`",
        ) from None
    use_ema = prefer_ema and bundle.ema_state is not None
    weights = bundle.ema_state if use_ema else bundle.model_state
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            path,
            f"its {'EMA' if use_ema else 'model'} weights do not fit the model built from {model_kwargs}: {error}",
            "Check metadata['model'] matches the architecture that was trained",
        ) from None
    return model.to(device).eval(), bundle.metadata
