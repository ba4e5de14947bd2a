"""`export --half`: a float16 ONNX graph for GPU runtimes, built on any machine (also one without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_export import _bundle

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["yolov8t", "yolov5t", "yolo11t"])
def test_half_export_is_float16_and_matches_the_float32_model(tmp_path, name):
    from accelyolo.commands.export import export

    weights, model = _bundle(tmp_path, name)
    path = export(weights, imgsz=64, half=True)
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    dtypes = {init.data_type for init in proto.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes and onnx.TensorProto.FLOAT not in dtypes
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": x.half().numpy()})
    assert got.dtype == np.float16 and got.shape == expected.shape
    got = got.astype(np.float32)
    # float16 keeps ~3 significant digits: boxes (pixels) within 1 % of their largest magnitude, scores 0.01
    boxes, scores = expected[..., :4], expected[..., 4:]
    assert np.abs(got[..., :4] - boxes).max() <= 0.01 * np.abs(boxes).max()
    assert np.abs(got[..., 4:] - scores).max() <= 0.01
