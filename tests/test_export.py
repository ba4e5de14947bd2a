"""ONNX export: onnxruntime reproduces the PyTorch model, metadata travels, predict runs the .onnx."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from accelyolo.commands.cli import main as cli_main
from accelyolo.families import build_model
from accelyolo.weights.checkpoint import save_checkpoint
from tests.conftest import assert_close_to_scale

onnx = pytest.importorskip("onnx", reason="the export extra (onnx, onnxruntime) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")

pytestmark = pytest.mark.usefixtures("one_thread")


def _bundle(tmp_path, name: str, nc: int = 3, seg_classes: int = 0):
    """A bundle of a model with random weights, BN statistics and class biases (varied, non-trivial scores);
    with `seg_classes`, a multi-task model whose `seg_names` are s0, s1, ..."""
    torch.manual_seed(0)
    model = build_model(name, nc=nc, seg_classes=seg_classes)
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
        if seg_classes:  # centre the logits on the mean feature: pixels differ in their class (several ids)
            classify = model.seg_head.classify
            seen = []
            hook = classify.register_forward_hook(lambda module, args, out: seen.append(args[0].mean((0, 2, 3))))
            model.eval().segment(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)))
            hook.remove()
            classify.weight.normal_(0, 1.0)
            classify.bias.copy_(-classify.weight.flatten(1) @ seen[0])
    meta = {"model": model.config, "names": [f"c{i}" for i in range(nc)], "config": {"imgsz": 64}}
    if seg_classes:
        meta["seg_names"] = [f"s{i}" for i in range(seg_classes)]
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
    from accelyolo.commands.export import export

    weights, model = _bundle(tmp_path, name)
    path = export(weights, imgsz=64)
    assert path == weights.with_suffix(".onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in (torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)), _real_images(tiny_demo, 1)):
        (got,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        # onnxruntime's kernels round otherwise: ~6e-7 of each column's largest value (boxes reach ~500 px)
        assert_close_to_scale(got, expected, rel=1e-5, dim=-1)
    assert [o.name for o in session.get_outputs()] == ["output0"]  # a detector: one output, as before
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["names"]) == ["c0", "c1", "c2"] and json.loads(props["stride"]) == [8, 16, 32]
    assert json.loads(props["imgsz"]) == 64 and json.loads(props["model"])["name"] == name
    assert "seg_names" not in props and "seg_logits" not in props


def _dims(value_info) -> list:
    return [d.dim_value or d.dim_param for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize(("name", "dynamic"), [("yolov8t", False), ("yolov5t", True)])
def test_multitask_export_has_the_seg_logits_output(tmp_path, tiny_demo, name, dynamic):
    """A multi-task bundle: `output0` as for a detector plus `seg_logits` (B, K, H, W), both equal to the
    PyTorch model's `model(x, x)`; `seg_names` in the metadata."""
    from accelyolo.commands.export import export

    weights, model = _bundle(tmp_path, name, seg_classes=4)
    path = export(weights, imgsz=64, dynamic=dynamic)
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["output0", "seg_logits"]
    if dynamic:
        assert _dims(proto.graph.output[1]) == ["batch", 4, "height", "width"]
        assert _dims(proto.graph.output[0])[:2] == ["batch", "boxes"]
    else:
        assert _dims(proto.graph.output[1]) == [1, 4, 64, 64] and _dims(proto.graph.output[0]) == [1, 84, 7]
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["seg_names"]) == ["s0", "s1", "s2", "s3"] and json.loads(props["names"]) == [
        "c0",
        "c1",
        "c2",
    ]
    assert json.loads(props["model"])["seg_classes"] == 4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [_real_images(tiny_demo, 1)] + ([_real_images(tiny_demo, 3), torch.rand(2, 3, 96, 128)] if dynamic else [])
    for x in inputs:
        detections, logits = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            expected_det, expected_logits = model(x, x)
        assert logits.shape == (x.shape[0], 4, *x.shape[2:]) and detections.shape == expected_det.shape
        assert_close_to_scale(logits, expected_logits, rel=1e-5)  # centred logits: unit-sized operands
        assert_close_to_scale(detections, expected_det, rel=1e-5, dim=-1)  # boxes reach ~1000 px
        assert len(np.unique(logits.argmax(1))) > 1  # the comparison covers more than one winning class


def test_dynamic_export_takes_other_sizes_and_batches(tmp_path, tiny_demo):
    from accelyolo.commands.export import export

    weights, model = _bundle(tmp_path, "yolov8t")
    path = export(weights, imgsz=64, dynamic=True, output=tmp_path / "dyn.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in (_real_images(tiny_demo, 4), torch.rand(2, 3, 96, 128)):
        (got,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        assert_close_to_scale(got, expected, rel=1e-5, dim=-1)  # boxes reach ~500 px: 1e-4 was 2 float32 steps


@pytest.mark.parametrize("name", ["yolov8t", "yolov5t"])
def test_predict_with_the_onnx_file_finds_the_same_objects(tmp_path, tiny_demo, name, capsys):
    from accelyolo.commands.predict import predict

    weights, _ = _bundle(tmp_path, name)
    assert cli_main(["export", "--weights", str(weights), "--imgsz", "64", "-o", str(tmp_path / "m.onnx")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "m.onnx")
    source = str(tiny_demo.parent / "images" / "val")
    ours = predict(weights=str(weights), source=source, imgsz=64, conf_thres=0.3, device="cpu")
    onnx_results = predict(weights=str(tmp_path / "m.onnx"), source=source, imgsz=64, conf_thres=0.3)
    assert sum(len(r.classes) for r in ours) > 0
    for a, b in zip(ours, onnx_results, strict=True):
        assert a.path == b.path and len(a.classes) == len(b.classes)
        # the same detections; equal-score neighbours may come out of NMS in another order
        order_a, order_b = (np.lexsort(np.column_stack((r.boxes.round(2), r.classes)).T) for r in (a, b))
        assert np.array_equal(a.classes[order_a], b.classes[order_b])
        # boxes in pixels of the 64-px demo images (clipped to them), scores up to 1: 1e-4 of each magnitude
        assert_close_to_scale(a.boxes[order_a], b.boxes[order_b], rel=1e-4, at_least=64)
        assert_close_to_scale(a.scores[order_a], b.scores[order_b], rel=1e-4)


def test_predict_with_a_multitask_onnx_writes_the_masks(tmp_path, tiny_demo):
    """`accelyolo predict --save --save-masks` on the .onnx: the colour mask and the class-id PNG of each
    image, the ids those of the PyTorch bundle's prediction."""
    from PIL import Image

    from accelyolo.commands.export import OnnxDetector
    from accelyolo.commands.predict import colour_mask, predict

    weights, _ = _bundle(tmp_path, "yolov8t", seg_classes=3)
    path = tmp_path / "mt.onnx"
    assert cli_main(["export", "--weights", str(weights), "--imgsz", "64", "-o", str(path)]) == 0
    source = tiny_demo.parent / "images" / "val"
    args = ["predict", "--weights", str(path), "--source", str(source), "--imgsz", "64", "--conf", "0.3"]
    assert cli_main([*args, "--save", "--save-masks", "--project", str(tmp_path / "pred")]) == 0
    ours = predict(weights=str(weights), source=str(source), imgsz=64, conf_thres=0.3, device="cpu")
    out = tmp_path / "pred" / "exp"
    assert len(ours) == 16
    for result in ours:
        stem = result.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        ids = np.asarray(Image.open(out / f"{stem}_classes.png"))
        colour = np.asarray(Image.open(out / f"{stem}_mask.png"))
        assert ids.shape == result.mask.shape == (64, 64) and colour.shape == (64, 64, 3)
        assert np.array_equal(ids, result.mask) and np.array_equal(colour, colour_mask(result.mask))
    assert len(np.unique(np.stack([r.mask for r in ours]))) > 1
    detector = OnnxDetector(path)
    assert detector.seg_classes == 3 and detector.metadata()["seg_names"] == ["s0", "s1", "s2"]
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"call model\(x, x\)"):
        detector(x, torch.rand(1, 3, 64, 64))


def test_a_damaged_or_foreign_onnx_is_a_clear_error(tmp_path, tiny_demo, capsys):
    """Every unusable .onnx is an ExportError naming the file (exit status 2 from the CLI), never a traceback."""
    from accelyolo.commands.export import OnnxDetector, export
    from accelyolo.core.errors import ExportError

    source = str(tiny_demo.parent / "images" / "val")
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(b"\x00not a protobuf" * 8)
    assert cli_main(["predict", "--weights", str(damaged), "--source", source]) == 2
    assert "damaged.onnx: onnxruntime cannot load it" in capsys.readouterr().err
    with pytest.raises(ExportError, match="missing.onnx: no such file"):
        OnnxDetector(tmp_path / "missing.onnx")

    weights, _ = _bundle(tmp_path, "yolov8t")
    path = export(weights, imgsz=64, output=tmp_path / "det.onnx")
    proto = onnx.load(str(path))
    foreign = tmp_path / "foreign.onnx"
    del proto.metadata_props[:]  # another tool's model: no accelyolo metadata
    onnx.save(proto, str(foreign))
    with pytest.raises(ExportError, match="foreign.onnx: no accelyolo metadata"):
        OnnxDetector(foreign)
    entry = proto.metadata_props.add()  # metadata that promises a mask the graph does not have
    entry.key, entry.value = "names", json.dumps(["c0", "c1", "c2"])
    for key, value in (("imgsz", "64"), ("seg_names", json.dumps(["a", "b"]))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(foreign))
    with pytest.raises(ExportError, match=r"lack \['seg_logits'\]"):
        OnnxDetector(foreign)
    detector = OnnxDetector(path)  # a detector's export: no mask, and asking for one says so
    assert detector.seg_classes == 0 and "seg_names" not in detector.metadata()
    with pytest.raises(ValueError, match="no segmentation output"):
        detector(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))


def test_missing_onnx_says_how_to_install(tmp_path, monkeypatch):
    from accelyolo.commands.export import export

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
