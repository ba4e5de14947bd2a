"""`accelyolo export --weights W --format onnx`: the fused EMA model with its decoded output, as ONNX.

The exported graph takes `images` (B, 3, H, W) float in [0, 1] and returns `output0` (B, N, 4 + nc): boxes
xywh in input pixels and per-class scores, exactly what the PyTorch model returns in eval mode (before
NMS). Class names, strides, image size and the model's build keywords go into the ONNX metadata, so
`accelyolo predict --weights model.onnx` needs nothing else. `onnx` and `onnxruntime` are the optional
extra `accelyolo[export]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from accelyolo.errors import AccelyoloError, ExportError, MissingDependencyError

__all__ = ["OnnxDetector", "export"]

LOGGER = logging.getLogger("accelyolo")

FORMATS = ("onnx",)
# The TorchScript-based exporter at an opset every onnxruntime from 1.15 on runs (ops up to 17).
OPSET = 17
_MISSING = "ONNX export needs the optional packages onnx and onnxruntime: pip install 'accelyolo[export]'"


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError(_MISSING) from None
    return onnx


def export(
    weights: str | os.PathLike[str],
    format: str = "onnx",  # noqa: A002 - the user-facing option name
    imgsz: int | None = None,
    dynamic: bool = False,
    half: bool = False,
    output: str | os.PathLike[str] | None = None,
    opset: int = OPSET,
) -> Path:
    """Export a checkpoint for deployment and return the written file.

    Args:
        weights: an accelyolo `.safetensors` bundle (its EMA weights) or a YOLOv5/v8/11 `.pt`.
        format: "onnx".
        imgsz: the square input size of a static graph (default: the training size, else 640); with
            `dynamic`, the size of the example used for tracing.
        dynamic: batch, height and width free (multiples of 32) instead of fixed.
        half: float16 weights and input (for GPU runtimes; onnxruntime's CPU kernels want float32).
        output: the file to write (default: the weights' path with the suffix `.onnx`).
        opset: ONNX opset version.
    """
    if format not in FORMATS:
        raise ExportError(f"export: --format {format!r} is not supported; choose one of {', '.join(FORMATS)}")
    from accelyolo.weights.importers import load_weights

    onnx = _require_onnx()
    model, meta = load_weights(weights)
    imgsz = int(imgsz or meta.get("config", {}).get("imgsz", 640))
    if imgsz % 32:
        raise ExportError(f"export: --imgsz must be a multiple of 32 (the largest stride), got {imgsz}")
    model = model.fuse().eval()
    dtype = torch.float16 if half else torch.float32
    model = model.to(dtype)
    example = torch.zeros(1, 3, imgsz, imgsz, dtype=dtype)
    path = Path(output) if output else Path(weights).with_suffix(".onnx")
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "boxes"}}
    with warnings.catch_warnings():
        # The tracer warns about the input-shape check (constant per trace). torch >= 2.9 calls this
        # TorchScript-based exporter legacy; its successor (dynamo=True) needs the onnxscript package.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=["output0"],
            dynamic_axes=axes if dynamic else None,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    names = list(meta.get("names") or [str(i) for i in range(model.nc)])
    extra = {
        "names": json.dumps(names),
        "stride": json.dumps([int(s) for s in model.stride.tolist()]),
        "imgsz": json.dumps(imgsz),
        "dynamic": json.dumps(dynamic),
        "half": json.dumps(half),
        "model": json.dumps(meta.get("model", getattr(model, "config", {}))),
        "output": "(batch, boxes, 4 + nc): xywh pixels, class scores; apply NMS",
    }
    for key, value in extra.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    LOGGER.info("exported %s -> %s (opset %d, %s, %s)", weights, path, opset, "dynamic" if dynamic else imgsz, dtype)
    return path


class OnnxDetector:
    """An exported model run by onnxruntime, called like the PyTorch model: (B, 3, H, W) -> (B, N, 4 + nc)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise MissingDependencyError(_MISSING) from None
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.names = json.loads(props["names"])
            self.imgsz = int(json.loads(props["imgsz"]))
            self.half = bool(json.loads(props.get("half", "false")))
        except (KeyError, json.JSONDecodeError, ValueError):
            raise ExportError(
                f"{self.path}: no accelyolo metadata (names, imgsz); export it with accelyolo export"
            ) from None
        self.nc = len(self.names)

    def metadata(self) -> dict[str, Any]:
        return {"names": self.names, "config": {"imgsz": self.imgsz}}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().to(torch.float16 if self.half else torch.float32).numpy()
        (out,) = self.session.run(["output0"], {"images": array})
        return torch.from_numpy(out).float()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="an accelyolo .safetensors bundle or a YOLOv5/v8/11 .pt")
    parser.add_argument("--format", default="onnx", choices=FORMATS)
    parser.add_argument("--imgsz", type=int, default=None, help="input size (default: the training size)")
    parser.add_argument("--dynamic", action="store_true", help="free batch size and image size")
    parser.add_argument("--half", action="store_true", help="float16 (for GPU runtimes)")
    parser.add_argument("--opset", type=int, default=OPSET)
    parser.add_argument("-o", "--output", default=None, help="output file (default: WEIGHTS with .onnx)")


def run(args: argparse.Namespace) -> int:
    from accelyolo.cli import exit_status

    try:
        path = export(**vars(args))
    except AccelyoloError as error:  # a user's mistake or a missing extra: one message, exit status 2
        return exit_status("accelyolo export", error)
    print(path)
    return 0
