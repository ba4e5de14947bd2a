"""ONNX export: onnxruntime reproduces the PyTorch model, metadata travels, predict runs the .onnx."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from accelyolo.checkpoint import save_checkpoint
from accelyolo.cli import main as cli_main
from accelyolo.families import build_model

onnx = pytest.importorskip("onnx", reason="the export extra (onnx, onnxruntime) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")

pytestmark = pytest.mark.usefixtures("one_thread")


def _bundle(tmp_path, name: str, nc: int = 3):
    """A bundle of a model with random weights, BN statistics and class biases (varied, non-trivial scores)."""
    torch.manual_seed(0)
    model = build_model(name, nc=nc)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0, 1.0)
        for branch in getattr(model.head, "box_branches", ()):  # boxes of image size, as a trained model's
            branch[-1].weight.mul_(0.1)
            branch[-1].bias.zero_()
    meta = {"model": model.config, "names": [f"c{i}" for i in range(nc)], "config": {"imgsz": 64}}
    path = save_checkpoint(tmp_path / f"{name}.safetensors", model_state=model.state_dict(), metadata=meta)
    return path, model.eval()


def _real_images(data_yaml, n: int = 4) -> torch.Tensor:
    """Demo validation images as a (n, 3, 64, 64) float batch in [0, 1]."""
    from PIL import Image

    files = sorted((data_yaml.parent / "images" / "val").iterdir())[:n]
    arrays = [np.asarray(Image.open(f).convert("RGB").resize((64, 64))) for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("name", ["yolov8t", "yolov5t", "yolo11t"])
def test_onnxruntime_equals_pytorch(tmp_path, tiny_demo, name):
    from accelyolo.exporter import export

    weights, model = _bundle(tmp_path, name)
    path = export(weights, imgsz=64)
    assert path == weights.with_suffix(".onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in (torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)), _real_images(tiny_demo, 1)):
        (got,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["names"]) == ["c0", "c1", "c2"] and json.loads(props["stride"]) == [8, 16, 32]
    assert json.loads(props["imgsz"]) == 64 and json.loads(props["model"])["name"] == name


def test_dynamic_export_takes_other_sizes_and_batches(tmp_path, tiny_demo):
    from accelyolo.exporter import export

    weights, model = _bundle(tmp_path, "yolov8t")
    path = export(weights, imgsz=64, dynamic=True, output=tmp_path / "dyn.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in (_real_images(tiny_demo, 4), torch.rand(2, 3, 96, 128)):
        (got,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("name", ["yolov8t", "yolov5t"])
def test_predict_with_the_onnx_file_finds_the_same_objects(tmp_path, tiny_demo, name, capsys):
    from accelyolo.prediction import predict

    weights, _ = _bundle(tmp_path, name)
    assert cli_main(["export", "--weights", str(weights), "--imgsz", "64", "-o", str(tmp_path / "m.onnx")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "m.onnx")
    source = str(tiny_demo.parent / "images" / "val")
    ours = predict(weights=str(weights), source=source, imgsz=64, conf=0.3, device="cpu")
    onnx_results = predict(weights=str(tmp_path / "m.onnx"), source=source, imgsz=64, conf=0.3)
    assert sum(len(r.classes) for r in ours) > 0
    for a, b in zip(ours, onnx_results, strict=True):
        assert a.path == b.path and len(a.classes) == len(b.classes)
        # the same detections; equal-score neighbours may come out of NMS in another order
        order_a, order_b = (np.lexsort(np.column_stack((r.boxes.round(2), r.classes)).T) for r in (a, b))
        assert np.array_equal(a.classes[order_a], b.classes[order_b])
        assert np.allclose(a.boxes[order_a], b.boxes[order_b], atol=1e-2)
        assert np.allclose(a.scores[order_a], b.scores[order_b], atol=1e-4)


def test_missing_onnx_says_how_to_install(tmp_path, monkeypatch):
    from accelyolo.exporter import export

    weights, _ = _bundle(tmp_path, "yolov8t")
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    with pytest.raises(ImportError, match=r"pip install 'accelyolo\[export\]'"):
        export(weights)
    with pytest.raises(ValueError, match="--format 'tflite' is not supported"):
        export(weights, format="tflite")


def test_package_level_export_function(tmp_path):
    import accelyolo

    weights, _ = _bundle(tmp_path, "yolov5t")
    path = accelyolo.export(str(weights), imgsz=64, output=str(tmp_path / "top.onnx"))
    assert path.is_file() and onnx.load(str(path)).graph.output[0].name == "output0"
