"""Importing other tools' weights: the .pt reader runs nothing, and each source layout imports exactly.

The source files are built here with stand-in classes that carry the module and class names the real
packages pickle (`ultralytics.nn.tasks.DetectionModel`, `models.yolo.Detect`, `models.common.C3`, ...)
around the same tensors, so the suite needs neither ultralytics nor the YOLOv5 repository. The same
checks against files written by the real packages are in the issue's closing note.
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from accelyolo.families import build_model
from accelyolo.weights.checkpoint import load_checkpoint
from accelyolo.weights.importers import WeightsImportError, import_weights, save_imported
from accelyolo.weights.pt_reader import PtReadError, Stub, read_pt, stub_state_dict
from tests.conftest import assert_close_to_scale

# -------------------------------------------------------------------- stand-in source models


def _fake_class(monkeypatch, module: str, name: str, base: type) -> type:
    """A subclass of `base` that pickles as `module.name` (the fake module is put in sys.modules)."""
    parts = module.split(".")
    for i in range(1, len(parts) + 1):  # pickle imports the module by name: make it and its parents importable
        dotted = ".".join(parts[:i])
        if dotted not in sys.modules:
            monkeypatch.setitem(sys.modules, dotted, types.ModuleType(dotted))
    fake = sys.modules[module]
    if getattr(fake, "__file__", None):  # the real package is installed: do not add stand-ins into it
        pytest.skip(f"{module} is installed here; these tests build stand-ins of it")
    if not hasattr(fake, name):
        setattr(fake, name, type(name, (base,), {"__module__": module, "__qualname__": name}))
    return getattr(fake, name)


def _disguise(monkeypatch, root: nn.Module, modules: dict[str, str]) -> None:
    """Re-class every accelyolo block under `root` as the source package's class of the same name."""
    for module in root.modules():
        cls = type(module)
        if cls.__module__.startswith("accelyolo.") and cls.__name__ in modules:  # the blocks the source pickles
            target, _, name = modules[cls.__name__].partition(":")  # "module" or "module:TheirName"
            module.__class__ = _fake_class(monkeypatch, target, name or cls.__name__, cls)


class _NoParams(nn.Module):
    """Upsample / Concat: layers that hold an index in the source's nn.Sequential but no tensors."""

    def forward(self, x):  # pragma: no cover - never run, only pickled
        return x


def _source_model(monkeypatch, ours: nn.Module, layers: list, head: nn.Module, model_cls: str, names) -> nn.Module:
    """The source DetectionModel: `model` = nn.Sequential of the layers (index order of the yaml)."""
    detection_model = _fake_class(monkeypatch, *model_cls.rsplit(".", 1), nn.Module)()
    detection_model.model = nn.Sequential(*layers, head)
    detection_model.names = names
    detection_model.stride = torch.tensor([8.0, 16.0, 32.0])
    detection_model.yaml = {"nc": ours.nc, "scale": "n"}
    return detection_model


def ultralytics_v8(monkeypatch, nc: int = 3, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(our yolov8t with random weights and BN statistics, the same weights as ultralytics lays them out)."""
    torch.manual_seed(seed)
    ours = build_model("yolov8t", nc=nc)
    _randomise(ours)
    mods = {n: "ultralytics.nn.modules.conv" for n in ("Conv",)}
    mods |= {n: "ultralytics.nn.modules.block" for n in ("C2f", "Bottleneck", "SPPF")}
    _disguise(monkeypatch, ours, mods)
    upsample = nn.Upsample
    concat = _fake_class(monkeypatch, "ultralytics.nn.modules.conv", "Concat", _NoParams)
    s, b = ours.backbone.stages, ours.neck.blocks
    layers = [*s, upsample(), concat(), b[0], upsample(), concat(), b[1], b[2], concat(), b[3], b[4], concat(), b[5]]
    detect = _fake_class(monkeypatch, "ultralytics.nn.modules.head", "Detect", nn.Module)()
    detect.cv2, detect.cv3 = ours.head.box_branches, ours.head.cls_branches
    dfl = _fake_class(monkeypatch, "ultralytics.nn.modules.block", "DFL", nn.Module)()
    dfl.conv = nn.Conv2d(16, 1, 1, bias=False).requires_grad_(False)
    dfl.conv.weight.data[:] = torch.arange(16.0).view(1, 16, 1, 1)
    detect.dfl, detect.stride, detect.nc = dfl, torch.tensor([8.0, 16.0, 32.0]), nc
    names = {i: f"thing{i}" for i in range(nc)}
    return ours, _source_model(monkeypatch, ours, layers, detect, "ultralytics.nn.tasks.DetectionModel", names)


def ultralytics_11(monkeypatch, nc: int = 3, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(our yolo11t with random weights and BN statistics, the same weights as ultralytics lays them out)."""
    torch.manual_seed(seed)
    ours = build_model("yolo11t", nc=nc)
    _randomise(ours)
    block = "ultralytics.nn.modules.block"
    mods = {"Conv": "ultralytics.nn.modules.conv", "PositionAttention": f"{block}:Attention"}
    mods |= {n: block for n in ("C3k2", "C3k", "Bottleneck", "SPPF", "C2PSA", "PSABlock")}
    _disguise(monkeypatch, ours, mods)
    upsample, concat = nn.Upsample, _fake_class(monkeypatch, "ultralytics.nn.modules.conv", "Concat", _NoParams)
    s, b = ours.backbone.stages, ours.neck.blocks
    layers = [*s, upsample(), concat(), b[0], upsample(), concat(), b[1], b[2], concat(), b[3], b[4], concat(), b[5]]
    detect = _fake_class(monkeypatch, "ultralytics.nn.modules.head", "Detect", nn.Module)()
    detect.cv2, detect.cv3 = ours.head.box_branches, ours.head.cls_branches
    dfl = _fake_class(monkeypatch, block, "DFL", nn.Module)()
    dfl.conv = nn.Conv2d(16, 1, 1, bias=False).requires_grad_(False)
    detect.dfl = dfl
    names = {i: f"eleven{i}" for i in range(nc)}
    return ours, _source_model(monkeypatch, ours, layers, detect, "ultralytics.nn.tasks.DetectionModel", names)


def yolov5_repo(monkeypatch, nc: int = 3, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(our yolov5t with random weights and refitted anchors, the same as the YOLOv5 repository lays it out)."""
    torch.manual_seed(seed)
    ours = build_model("yolov5t", nc=nc)
    _randomise(ours)
    ours.head.anchors.mul_(torch.empty_like(ours.head.anchors).uniform_(0.7, 1.4))  # as after autoanchor
    mods = {n: "models.common" for n in ("Conv", "C3", "Bottleneck", "SPPF")}
    _disguise(monkeypatch, ours, mods)
    upsample = nn.Upsample
    concat = _fake_class(monkeypatch, "models.common", "Concat", _NoParams)
    s, b = ours.backbone.stages, ours.neck.blocks
    layers = [*s, b[0], upsample(), concat(), b[1], b[2], upsample(), concat(), b[3], b[4], concat(), b[5], b[6]]
    layers += [concat(), b[7]]
    detect = _fake_class(monkeypatch, "models.yolo", "Detect", nn.Module)()
    detect.m = ours.head.m
    stride = torch.tensor([8.0, 16.0, 32.0])
    detect.register_buffer("anchors", ours.head.anchors.clone() / stride.view(-1, 1, 1))  # grid units, as YOLOv5
    detect.stride, detect.nc = stride, nc
    names = [f"v5class{i}" for i in range(nc)]
    return ours, _source_model(monkeypatch, ours, layers, detect, "models.yolo.DetectionModel", names)


@torch.no_grad()
def _randomise(model: nn.Module) -> None:
    """Non-trivial BN statistics and biases, so a misplaced tensor changes the output."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.1)
        elif isinstance(m, nn.Conv2d) and m.bias is not None:
            m.bias.normal_(0, 0.5)


def _checkpoint(source: nn.Module, half: bool = True, entry: str = "ema") -> dict:
    """The checkpoint dict ultralytics and YOLOv5 write: the model object (half), epoch, options, ..."""
    model = source.half() if half else source
    other = "model" if entry == "ema" else "ema"
    return {
        "epoch": 3,
        "best_fitness": 0.5,
        entry: model,
        other: None,
        "optimizer": None,
        "train_args": {"imgsz": 64, "path": "x"},
        "date": "2026-11-25",
        "version": "8.4.190",
    }


def _expected_output(ours: nn.Module, half: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    reference = build_model(**ours.config)
    state = {k: (v.half().float() if half and v.is_floating_point() else v) for k, v in ours.state_dict().items()}
    reference.load_state_dict(state)
    with torch.no_grad():
        return x, reference.eval()(x)


# -------------------------------------------------------------------- the reader runs nothing


class _Payload:
    """Pickles as a call of `func(*args)`; a trusting unpickler makes that call while reading."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("how", ["os.system", "builtins.exec", "torch.save"])
def test_reduce_payload_never_runs(tmp_path, monkeypatch, how):
    marker = tmp_path / "marker"
    payload = {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "builtins.exec": _Payload(exec, f"open({str(marker)!r}, 'w').close()"),
        # a name inside the stand-in modules: it becomes an inert stand-in, called with nothing happening
        "torch.save": _Payload(torch.save, {"x": torch.zeros(1)}, str(marker)),
    }[how]
    _, source = ultralytics_v8(monkeypatch)
    path = tmp_path / "evil.pt"
    torch.save({**_checkpoint(source), "git": payload}, path)
    if how == "torch.save":
        obj = read_pt(path)
        assert isinstance(obj["git"], Stub) and obj["git"].stub_name == "torch.serialization.save"
        assert import_weights(path).model.nc == 3  # the model beside the payload still imports
    else:
        with pytest.raises(PtReadError, match="refused without importing or calling it"):
            read_pt(path)
        with pytest.raises(WeightsImportError, match=r"evil\.pt"):
            import_weights(path)
    assert not marker.exists()


def test_reader_rebuilds_tensors_and_module_state(tmp_path):
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    seq[1].running_mean.normal_()
    shared = torch.arange(12.0)
    path = tmp_path / "plain.pt"
    torch.save({"m": seq.half(), "view": shared[2:8].view(2, 3), "full": shared, "o": OrderedDict(a=1)}, path)
    obj = read_pt(path)
    assert isinstance(obj["m"], Stub) and obj["m"].stub_name == "torch.nn.modules.container.Sequential"
    state = stub_state_dict(obj["m"])
    assert list(state) == list(seq.state_dict())
    assert all(torch.equal(state[k], v) and state[k].dtype == v.dtype for k, v in seq.state_dict().items())
    assert torch.equal(obj["view"], shared[2:8].view(2, 3)) and torch.equal(obj["full"], shared)
    assert obj["o"] == OrderedDict(a=1) and obj["m"].attr("training") is True


def test_not_a_zip_is_refused_with_its_name(tmp_path):
    path = tmp_path / "legacy.pt"
    path.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(PtReadError, match=r"legacy\.pt: not a torch.save zip archive"):
        read_pt(path)


# -------------------------------------------------------------------- each source layout


@pytest.mark.parametrize("half, entry", [(True, "ema"), (False, "model")])
def test_ultralytics_v8_imports_exactly(tmp_path, monkeypatch, half, entry):
    ours, source = ultralytics_v8(monkeypatch)
    x, expected = _expected_output(ours, half)
    path = tmp_path / "yolov8-best.pt"
    torch.save(_checkpoint(source, half=half, entry=entry), path)
    out, imported = save_imported(path, tmp_path / "imported.safetensors")
    assert imported.source == "ultralytics" and imported.entry == entry
    model, meta = load_checkpoint(out)
    assert meta["model"]["name"] == "yolov8t" and meta["model"]["nc"] == 3
    assert meta["names"] == ["thing0", "thing1", "thing2"]
    with torch.no_grad():
        got = model(x)
    assert got.shape == expected.shape == (2, 126, 7)
    # the reference's very weights: bit-equal outputs here; 1e-6 of each column's largest value (boxes reach
    # hundreds of px) leaves room only for kernels that sum in another order, as do the other import tests
    assert_close_to_scale(got, expected, rel=1e-6, dim=-1)


def test_ultralytics_yolo11_imports_exactly(tmp_path, monkeypatch):
    ours, source = ultralytics_11(monkeypatch)
    x, expected = _expected_output(ours, half=True)
    path = tmp_path / "yolo11-best.pt"
    torch.save(_checkpoint(source), path)
    imported = import_weights(path)
    assert imported.model.config["name"] == "yolo11t" and imported.names == ["eleven0", "eleven1", "eleven2"]
    with torch.no_grad():
        assert_close_to_scale(imported.model(x), expected, rel=1e-6, dim=-1)


def test_yolov5_repository_imports_with_its_anchors(tmp_path, monkeypatch):
    ours, source = yolov5_repo(monkeypatch)
    x, expected = _expected_output(ours, half=True)
    path = tmp_path / "yolov5-best.pt"
    torch.save(_checkpoint(source, entry="model"), path)
    out, imported = save_imported(path, tmp_path / "v5.safetensors")
    model, meta = load_checkpoint(out)
    assert imported.source == "yolov5" and meta["model"]["name"] == "yolov5t"
    assert meta["names"] == ["v5class0", "v5class1", "v5class2"]
    # anchors come along, back in pixels (the file keeps them in cells of each level)
    assert torch.allclose(model.head.anchors, ours.head.anchors.half().float(), atol=1e-2)
    with torch.no_grad():
        assert_close_to_scale(model(x), expected, rel=1e-6, dim=-1)


@pytest.mark.parametrize("make", [ultralytics_v8, ultralytics_11, yolov5_repo])
def test_plain_state_dicts_import(tmp_path, monkeypatch, make):
    ours, source = make(monkeypatch)
    x, expected = _expected_output(ours, half=False)
    st = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, st, metadata={"names": '["a", "b", "c"]'})
    pt = tmp_path / "state.pt"
    torch.save(source.state_dict(), pt)
    for path in (st, pt):
        imported = import_weights(path)
        assert imported.source == "state_dict"
        with torch.no_grad():
            assert_close_to_scale(imported.model(x), expected, rel=1e-6, dim=-1)
    assert import_weights(st).names == ["a", "b", "c"]
    assert import_weights(pt).names == ["class0", "class1", "class2"]


def test_foreign_layouts_are_refused_with_a_reason(tmp_path, monkeypatch):
    ours, source = ultralytics_v8(monkeypatch)
    state = source.state_dict()
    state["model.22.cv2.0.0.conv.weight"] = state["model.22.cv2.0.0.conv.weight"][:, :-1]  # no variant has it
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    with pytest.raises(WeightsImportError, match=r"odd\.pt: its tensors match no registered anchor_free model"):
        import_weights(path)
    torch.save({"backbone.conv.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsImportError, match="not a layout accelyolo imports"):
        import_weights(path)
    torch.save({"epoch": 1}, path)
    with pytest.raises(WeightsImportError, match="'ema' or 'model' entry"):
        import_weights(path)


def test_fine_tune_from_a_pt_transfers_all_but_the_class_layers(tmp_path, monkeypatch, tiny_demo, one_thread):
    import logging

    from accelyolo.commands.fit import fit
    from tests.conftest import tiny_train_options

    ours, source = ultralytics_v8(monkeypatch, nc=80)  # a COCO-sized head; the demo data has 4 classes
    path = tmp_path / "yolov8t-coco.pt"
    torch.save(_checkpoint(source, half=False), path)
    messages = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger, handler = logging.getLogger("accelyolo"), Keep(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        result = fit(**tiny_train_options(tiny_demo, tmp_path, weights=str(path), epochs=1, freeze=10))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    # every tensor comes from the file except the class branches, whose width follows nc (80 -> 4 classes)
    new, old = build_model("yolov8t", nc=4).state_dict(), ours.state_dict()
    reshaped = [k for k in new if new[k].shape != old[k].shape]
    assert reshaped and all(k.startswith("head.cls_branches.") for k in reshaped)
    assert f"weights: transferred {len(new) - len(reshaped)}/{len(new)} tensors from {path}" in messages
    model, meta = load_checkpoint(result.last_checkpoint, prefer_ema=False)
    assert model.nc == 4
    trained, source_state = model.state_dict(), ours.state_dict()
    frozen = [k for k in trained if k.startswith("backbone.") and k.endswith("conv.weight")]
    assert frozen and all(torch.equal(trained[k], source_state[k]) for k in frozen)  # transferred, then frozen


def test_fine_tuning_another_architecture_warns(tmp_path, monkeypatch, caplog):
    import logging

    from accelyolo.weights.importers import weights_for_fine_tuning

    ours, source = ultralytics_v8(monkeypatch)
    path = tmp_path / "v8.pt"
    torch.save(_checkpoint(source, half=False), path)
    with caplog.at_level(logging.WARNING, logger="accelyolo"):
        state = weights_for_fine_tuning(path, "yolov8t")
        assert not caplog.records
        weights_for_fine_tuning(path, "yolo11n")
    assert "holds a yolov8t; training a yolo11n" in caplog.text
    assert state.keys() == ours.state_dict().keys()


def test_import_command_and_val_of_a_pt(tmp_path, monkeypatch, tiny_demo, capsys, one_thread):
    from accelyolo.commands.cli import main as cli_main
    from accelyolo.commands.validate import validate

    _, source = yolov5_repo(monkeypatch, nc=4)
    path = tmp_path / "v5.pt"
    torch.save(_checkpoint(source), path)
    out = tmp_path / "v5.safetensors"
    assert cli_main(["import", str(path), "-o", str(out)]) == 0
    assert "as yolov5t nc=4" in capsys.readouterr().out and out.is_file()
    common = dict(data=str(tiny_demo), imgsz=64, workers=0, plots=False, project=str(tmp_path / "val"))
    from_pt = validate(weights=str(path), name="pt", **common).metrics
    from_bundle = validate(weights=str(out), name="bundle", **common).metrics
    assert from_pt == from_bundle
    torch.save({"x": _Payload(os.system, "true")}, tmp_path / "bad.pt")
    capsys.readouterr()
    assert cli_main(["import", str(tmp_path / "bad.pt")]) == 2  # refused: one message, exit status 2
    assert re.search(r"accelyolo import: .*bad\.pt: .*'posix\.system'", capsys.readouterr().err)
