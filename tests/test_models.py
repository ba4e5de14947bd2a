"""Models: registry, output shapes, published sizes, gradients, fuse, transfer, freeze, info."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

from accelyolo.families import COCO_ANCHORS, build_model, list_models, model_spec
from accelyolo.models import freeze_layers, model_info, transfer_weights
from tests.conftest import assert_close_to_scale

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "models"

# name: (parameters, GFLOPs) at nc=80, 640 px; relative tolerances (params, GFLOPs).
PUBLISHED = {
    "yolov8n": (3_157_200, 8.7, 0.005, 0.03),
    "yolov8s": (11_166_560, 28.6, 0.005, 0.03),
    "yolov8m": (25_902_640, 78.9, 0.005, 0.03),
    "yolov8l": (43_691_520, 165.2, 0.005, 0.03),
    "yolov8x": (68_229_648, 257.8, 0.005, 0.03),
    "yolov5n": (1_872_157, 4.5, 0.005, 0.03),
    "yolov5s": (7_235_389, 16.5, 0.005, 0.03),
    "yolov5m": (21_200_000, 49.0, 0.01, 0.03),
    "yolov5l": (46_500_000, 109.1, 0.01, 0.03),
    "yolov5x": (86_700_000, 205.7, 0.01, 0.03),
    # YOLO11: ultralytics' published counts less 16 (its DFL projection is a parameter, ours a buffer)
    "yolo11n": (2_624_080 - 16, 6.6, 1e-9, 0.02),
    "yolo11s": (9_458_752 - 16, 21.7, 1e-9, 0.02),
    "yolo11m": (20_114_688 - 16, 68.5, 1e-9, 0.02),
    "yolo11l": (25_372_160 - 16, 87.6, 1e-9, 0.02),
    "yolo11x": (56_966_176 - 16, 196.0, 1e-9, 0.02),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_names():
    names = list_models()
    for scale in "nslmxt":
        assert f"yolov8{scale}" in names and f"yolov5{scale}" in names
    assert set(list_models("anchor_free")) == {f"yolov8{s}" for s in "nslmxt"}
    assert set(list_models("yolo11")) == {f"yolo11{s}" for s in "nslmxt"}
    with pytest.raises(ValueError, match="unknown model 'yolov9n'"):
        build_model("yolov9n")


@pytest.mark.parametrize("family_file", ["yolov8.yaml", "yolov5.yaml", "yolo11.yaml"])
def test_recipe_scales_match_registry(family_file):
    recipe = yaml.safe_load((RECIPES / family_file).read_text())
    prefix = family_file.removesuffix(".yaml")
    for scale, values in recipe["scales"].items():
        spec = model_spec(prefix + scale)
        assert spec.family == recipe["family"]
        assert [spec.depth, spec.width] == values[:2]
        if spec.family in ("anchor_free", "yolo11"):
            assert spec.extra["max_channels"] == values[2]
        if spec.family == "yolo11":
            assert spec.extra["c3k"] == values[3]
    if "anchors" in recipe:
        assert recipe["anchors"] == [[list(a) for a in level] for level in COCO_ANCHORS]


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_sizes(name):
    params, gflops, p_tol, f_tol = PUBLISHED[name]
    with torch.device("meta"):
        model = build_model(name, nc=80)
    info = model_info(model.eval(), 640)
    assert abs(info["parameters"] - params) / params < p_tol, info
    assert abs(info["gflops"] - gflops) / gflops < f_tol, info


@pytest.mark.parametrize("name", list_models())
def test_output_shapes(name):
    nc, b, h, w = 3, 2, 64, 96
    device = "cpu" if name.endswith("t") else "meta"  # big models: shapes only, no compute
    with torch.device(device):
        model = build_model(name, nc=nc)
        x = torch.rand(b, 3, h, w)
    cells = [(h // s) * (w // s) for s in (8, 16, 32)]
    model.train()
    raw = model(x)
    assert len(raw) == 3
    if model.family in ("anchor_free", "yolo11"):
        assert [tuple(r.shape) for r in raw] == [(b, 64 + nc, h // s, w // s) for s in (8, 16, 32)]
        n = sum(cells)
    else:
        assert [tuple(r.shape) for r in raw] == [(b, 3, h // s, w // s, 5 + nc) for s in (8, 16, 32)]
        n = 3 * sum(cells)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert tuple(out.shape) == (b, n, 4 + nc)
    assert model.stride.shape == (3,)
    if device == "cpu":
        assert model.stride.tolist() == [8.0, 16.0, 32.0]


@pytest.mark.parametrize("name", ["yolov8t", "yolov5t", "yolo11t"])
def test_eval_output_is_boxes_in_pixels_and_scores(name):
    torch.manual_seed(0)
    model = build_model(name, nc=2).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert ((out[..., 4:] >= 0) & (out[..., 4:] <= 1)).all()
    assert (out[..., 2:4] > 0).all()
    centres = out[..., :2]
    assert centres.min() > -64 and centres.max() < 128  # near the image, in pixels


@pytest.mark.parametrize("name", ["yolov8t", "yolov5t", "yolo11t"])
def test_every_parameter_gets_a_finite_gradient(name):
    torch.manual_seed(0)
    model = build_model(name, nc=2).train()
    raw = model(torch.rand(2, 3, 64, 64))
    sum(r.float().square().mean() for r in raw).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", ["yolov8t", "yolov5t", "yolo11t"])
def test_config_rebuilds_the_same_architecture(name):
    model = build_model(name, nc=4, width=0.125)
    config = json.loads(json.dumps(model.config))  # JSON-able
    assert config["name"] == name and config["nc"] == 4
    rebuilt = build_model(**config)
    own, other = model.state_dict(), rebuilt.state_dict()
    assert own.keys() == other.keys()
    assert all(own[k].shape == other[k].shape for k in own)
    assert model.family == rebuilt.family and rebuilt.nc == 4


def test_anchors_are_a_state_dict_buffer_in_pixels():
    model = build_model("yolov5t", nc=2)
    assert torch.equal(model.state_dict()["head.anchors"], torch.tensor(COCO_ANCHORS, dtype=torch.float32))
    bias = model.head.m[0].bias.view(3, -1)  # P3, stride 8: 8 objects over 80 x 80 cells
    assert torch.allclose(bias[:, 4].mean(), torch.tensor(8 / 80**2).log(), atol=0.5)


@pytest.mark.parametrize("name", ["yolov8t", "yolov5t", "yolo11t"])
def test_fuse_keeps_outputs(name):
    torch.manual_seed(0)
    model = build_model(name, nc=3)
    model.train()
    with torch.no_grad():  # give BN non-trivial statistics, then compare in eval mode
        for _ in range(3):
            model(torch.rand(2, 3, 64, 64))
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        after = model.fuse()(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert_close_to_scale(after, before, rel=1e-5, dim=-1)  # folding rounds ~1e-7 of each column's largest value


@pytest.mark.parametrize("name", ["yolov8t", "yolov5t", "yolo11t"])
def test_transfer_weights_with_another_class_count(name, caplog):
    source = build_model(name, nc=80)
    target = build_model(name, nc=3)
    with caplog.at_level(logging.INFO, logger="accelyolo.models.yolo"):
        moved, total = transfer_weights(target, source.state_dict())
    assert total == len(target.state_dict()) and 0 < moved < total
    assert "transferred" in caplog.text
    src, dst = source.state_dict(), target.state_dict()
    for key in dst:
        if dst[key].shape == src[key].shape:
            assert torch.equal(dst[key], src[key]), key
    # the class outputs differ in shape, so they keep their own initialisation
    assert any(dst[k].shape != src[k].shape for k in dst)
    assert transfer_weights(target, target.state_dict()) == (total, total)


def test_freeze_layers_backbone():
    model = build_model("yolov5t", nc=2)
    frozen = freeze_layers(model, 10)
    assert frozen and all(n.startswith("backbone.") for n in frozen)
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith("backbone.")), name
    assert freeze_layers(build_model("yolov8t", nc=2), 0) == []
    with pytest.raises(ValueError, match="freeze_layers: n must be between 0 and"):
        freeze_layers(model, 99)


def test_model_info_counts_and_prints():
    model = build_model("yolov8t", nc=2)
    freeze_layers(model, 2)
    lines = []
    info = model_info(model, 64, print_fn=lines.append)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert 0 < info["gradients"] < info["parameters"] and info["gflops"] > 0
    assert len(lines) == 1 and "yolov8t" in lines[0] and "GFLOPs" in lines[0]
    assert next(model.parameters()).device.type == "cpu"  # counting used a meta copy


def test_bad_input_shape_is_explained():
    model = build_model("yolov8t", nc=2)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 60, 64))


def test_decode_of_neutral_raw_outputs():
    # anchor-free: uniform DFL bins -> 7.5 cells on each side of the cell centre; scores sigmoid(0) = 0.5
    head = build_model("yolov8t", nc=2).head
    raw = [torch.zeros(1, 64 + 2, 64 // s, 64 // s) for s in (8, 16, 32)]
    out = head.decode(raw)  # (1, 64 + 16 + 4, 6)
    assert out.shape == (1, 84, 6)
    torch.testing.assert_close(out[0, 0], torch.tensor([4.0, 4.0, 120.0, 120.0, 0.5, 0.5]))
    torch.testing.assert_close(out[0, 64 + 16 + 3], torch.tensor([48.0, 48.0, 480.0, 480.0, 0.5, 0.5]))
    # anchor-based: sigmoid(0) = 0.5 -> the cell centre, the anchor's size, score 0.5 x 0.5
    head = build_model("yolov5t", nc=2).head
    raw = [torch.zeros(1, 3, 64 // s, 64 // s, 7) for s in (8, 16, 32)]
    out = head.decode(raw)
    assert out.shape == (1, 3 * 84, 6)
    torch.testing.assert_close(out[0, 1], torch.tensor([12.0, 4.0, 10.0, 13.0, 0.25, 0.25]))
    torch.testing.assert_close(out[0, -1], torch.tensor([48.0, 48.0, 373.0, 326.0, 0.25, 0.25]))


def test_yolo11_trains_with_the_anchor_free_loss(tiny_demo, tmp_path):
    from accelyolo.commands.fit import fit
    from tests.conftest import tiny_train_options

    result = fit(**tiny_train_options(tiny_demo, tmp_path, model="yolo11t", epochs=1))
    with open(result.run_dir / "results.csv") as file:
        header, row = file.read().splitlines()[:2]
    losses = dict(zip(header.split(","), row.split(",")))
    names = ("train/box_loss", "train/cls_loss", "train/dfl_loss")
    assert all(0 < float(losses[k]) < 100 for k in names), losses
