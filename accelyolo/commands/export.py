"""`accelyolo export --weights W --format onnx`: the fused EMA model with its decoded output, as ONNX.

The exported graph takes `images` (B, 3, H, W) float in [0, 1] and returns `output0` (B, N, 4 + nc): boxes
xywh in input pixels and per-class scores, exactly what the PyTorch model returns in eval mode (before
NMS). Class names, strides, image size and the model's build keywords go into the ONNX metadata, so
`accelyolo predict --weights model.onnx` needs nothing else. `onnx` and `onnxruntime` are the optional
extra `accelyolo[export]`.

A multi-task model (`seg_classes` K) gets a second output, `seg_logits` (B, K, H, W): per-pixel class
logits at the input size, of the same images (the backbone runs once), with `seg_names` in the
metadata. Logits rather than the argmax ids, because the ids of an original image come from logits:
predict crops the letterbox padding and resizes the logits (bilinear) to the image's size before the
argmax, which ids resized by nearest neighbour would only approximate; a softmax of them is also the
per-pixel confidence. The argmax over axis 1 gives the class ids. `output0` keeps its name, so code
reading a detector's export reads a multi-task one unchanged.
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
from torch import nn

from accelyolo.core.defaults import imgsz_problem
from accelyolo.core.errors import AccelyoloError, ExportError, MissingDependencyError
from accelyolo.core.flags import add_option_flag

__all__ = ["OnnxDetector", "export"]

LOGGER = logging.getLogger("accelyolo")

FORMATS = ("onnx",)
# The TorchScript-based exporter at an opset every onnxruntime from 1.15 on runs (ops up to 17).
OPSET = 17
_MISSING = "ONNX export needs the optional packages onnx and onnxruntime: pip install 'accelyolo[export]'"
DETECTIONS, SEG_LOGITS = "output0", "seg_logits"  # the graph's output names


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError(_MISSING) from None
    return onnx


class _DetectAndSegment(nn.Module):
    """A multi-task model with one input: `images` -> (detections, seg logits) of the same images."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(images, images)  # the same tensor twice: one backbone pass for both heads


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

    A multi-task bundle (`seg_classes` in its model metadata) gets the second output `seg_logits`
    and `seg_names` in the metadata (see the module docstring); a detector's export is unchanged.

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
    if problem := imgsz_problem("export: --imgsz", imgsz):
        raise ExportError(problem)
    model = model.fuse().eval()
    dtype = torch.float16 if half else torch.float32
    model = model.to(dtype)
    example = torch.zeros(1, 3, imgsz, imgsz, dtype=dtype)
    path = Path(output) if output else Path(weights).with_suffix(".onnx")
    segments = bool(getattr(model, "seg_classes", 0))
    _trace(_DetectAndSegment(model) if segments else model, example, path, segments, dynamic, opset)
    proto = onnx.load(str(path))
    if segments:  # the tracer leaves K symbolic in a dynamic graph; it is the model's, fixed
        proto.graph.output[1].type.tensor_type.shape.dim[1].dim_value = int(model.seg_classes)
    for key, value in _metadata(model, meta, imgsz, dynamic, half).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    LOGGER.info("exported %s -> %s (opset %d, %s, %s)", weights, path, opset, "dynamic" if dynamic else imgsz, dtype)
    return path


def _trace(model: nn.Module, example: torch.Tensor, path: Path, segments: bool, dynamic: bool, opset: int) -> None:
    """`model` traced on `example` into the ONNX file `path`: outputs `detections` (and `seg_logits`), the
    batch, height and width free when `dynamic`."""
    outputs = [DETECTIONS, SEG_LOGITS] if segments else [DETECTIONS]
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, DETECTIONS: {0: "batch", 1: "boxes"}}
    if segments:
        axes[SEG_LOGITS] = {0: "batch", 2: "height", 3: "width"}  # the input's own height and width
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
            output_names=outputs,
            dynamic_axes=axes if dynamic else None,
            do_constant_folding=True,
        )


def _metadata(model: nn.Module, meta: dict[str, Any], imgsz: int, dynamic: bool, half: bool) -> dict[str, str]:
    """The ONNX metadata (JSON strings) that `OnnxDetector` and other readers of the file need."""
    names = list(meta.get("names") or [str(i) for i in range(model.nc)])
    out = {
        "names": json.dumps(names),
        "stride": json.dumps([int(s) for s in model.stride.tolist()]),
        "imgsz": json.dumps(imgsz),
        "dynamic": json.dumps(dynamic),
        "half": json.dumps(half),
        "model": json.dumps(meta.get("model", getattr(model, "config", {}))),
        "output": "(batch, boxes, 4 + nc): xywh pixels, class scores; apply NMS",
    }
    k = int(getattr(model, "seg_classes", 0))
    if k:
        out["seg_names"] = json.dumps(list(meta.get("seg_names") or [str(i) for i in range(k)]))
        out[SEG_LOGITS] = "(batch, K, height, width): per-pixel logits of seg_names; argmax over K = class id"
    return out


class OnnxDetector:
    """An exported model run by onnxruntime, called like the PyTorch model: `model(x)` -> (B, N, 4 + nc).

    A multi-task export (`seg_classes` > 0, `seg_names` from its metadata) also answers `model(x, x)`
    with `(detections, seg_logits)`, as the PyTorch model does; its graph segments the detection
    input, so the second argument must be the same tensor. Any file onnxruntime cannot load, or one
    without accelyolo's metadata, is an `ExportError` naming it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise MissingDependencyError(_MISSING) from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"{self.path}: no such file; export one with accelyolo export --weights W")
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own types (InvalidProtobuf, Fail, ...) share no base but Exception
            raise ExportError(
                f"{self.path}: onnxruntime cannot load it ({exc}); re-export it with accelyolo export"
            ) from None
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.names = json.loads(props["names"])
            self.imgsz = int(json.loads(props["imgsz"]))
            self.half = bool(json.loads(props.get("half", "false")))
            self.seg_names = list(json.loads(props.get("seg_names", "[]")))
        except (KeyError, json.JSONDecodeError, ValueError, TypeError):
            raise ExportError(
                f"{self.path}: no accelyolo metadata (names, imgsz); export it with accelyolo export"
            ) from None
        self.nc, self.seg_classes = len(self.names), len(self.seg_names)
        outputs = {o.name for o in self.session.get_outputs()}
        wanted = {DETECTIONS, SEG_LOGITS} if self.seg_classes else {DETECTIONS}
        if not wanted <= outputs:
            raise ExportError(
                f"{self.path}: the graph's outputs {sorted(outputs)} lack {sorted(wanted - outputs)}; "
                "re-export it with accelyolo export"
            )

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"names": self.names, "config": {"imgsz": self.imgsz}}
        if self.seg_classes:
            out["seg_names"] = self.seg_names
        return out

    def __call__(self, x: torch.Tensor, seg_x: torch.Tensor | None = None) -> Any:
        array = x.detach().cpu().to(torch.float16 if self.half else torch.float32).numpy()
        if seg_x is None:
            (out,) = self.session.run([DETECTIONS], {"images": array})
            return torch.from_numpy(out).float()
        if not self.seg_classes:
            raise ValueError(f"OnnxDetector: {self.path} has no segmentation output (not a multi-task export)")
        if seg_x is not x:
            raise ValueError("OnnxDetector: the exported graph segments its detection input; call model(x, x)")
        out, logits = self.session.run([DETECTIONS, SEG_LOGITS], {"images": array})
        return torch.from_numpy(out).float(), torch.from_numpy(logits).float()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="an accelyolo .safetensors bundle or a YOLOv5/v8/11 .pt")
    parser.add_argument("--format", default="onnx", choices=FORMATS)
    add_option_flag(parser, "imgsz", default=None, help="input size (default: the training size)")
    parser.add_argument("--dynamic", action="store_true", help="free batch size and image size")
    parser.add_argument("--half", action="store_true", help="float16 (for GPU runtimes)")
    parser.add_argument("--opset", type=int, default=OPSET)
    parser.add_argument("-o", "--output", default=None, help="output file (default: WEIGHTS with .onnx)")


def run(args: argparse.Namespace) -> int:
    from accelyolo.commands.cli import exit_status

    try:
        path = export(**vars(args))
    except AccelyoloError as error:  # a user's mistake or a missing extra: one message, exit status 2
        return exit_status("accelyolo export", error)
    print(path)
    return 0
