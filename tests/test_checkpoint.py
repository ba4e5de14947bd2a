"""Checkpoint bundles: exact round trips, resumed training equal to uninterrupted training."""

from __future__ import annotations

import copy
import json
import math
import random

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

import accelyolo
from accelyolo.core.rng import capture_rng_state, restore_rng_state
from accelyolo.training.ema import ModelEMA
from accelyolo.training.optim import build_optimizer
from accelyolo.weights.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    load_checkpoint_bundle,
    save_checkpoint,
    strip_checkpoint,
)


class TinyNet(nn.Module):
    """Conv + BatchNorm + conv with bias + linear head: every parameter group and buffer kind."""

    def __init__(self, width: int = 8, nc: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.head = nn.Linear(width, nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.silu(self.bn1(self.conv1(x)))  # (B, C, H, W)
        x = self.conv2(x).mean(dim=(2, 3))  # (B, C)
        return self.head(x)  # (B, nc)


def assert_same(a, b, where: str = "") -> None:
    """Recursively compare two structures: same types, same keys in the same order, equal tensors."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        assert torch.equal(a, b), f"{where}: values differ"
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def train_steps(model, optimizer, scaler, ema, steps: int, seed: int) -> None:
    """A few real optimizer steps (train-mode BatchNorm, GradScaler, EMA update)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 3, 16, 16, generator=generator)
        target = torch.randn(4, 3, generator=generator)
        loss = (model(x) - target).square().mean()
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        ema.update(model)


def make_run(optimizer_name: str, seed: int):
    torch.manual_seed(seed)
    model = TinyNet()
    optimizer = build_optimizer(optimizer_name, model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    ema = ModelEMA(model, decay=0.999, tau=5)
    return model, optimizer, scaler, ema


@pytest.mark.parametrize("optimizer_name", ["SGD", "AdamW", "Adam", "RMSProp"])
def test_round_trip_then_one_more_step_is_bitwise_equal(tmp_path, optimizer_name):
    model, optimizer, scaler, ema = make_run(optimizer_name, seed=0)
    train_steps(model, optimizer, scaler, ema, steps=3, seed=1)
    saved = {
        "model": copy.deepcopy(model.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "scaler": copy.deepcopy(scaler.state_dict()),
        "ema": copy.deepcopy(ema.state_dict()),
    }
    metadata = {"epoch": 2, "global_step": 3, "best_fitness": 0.25, "ema_updates": ema.updates}
    path = save_checkpoint(
        tmp_path / "last.safetensors",
        model_state=model.state_dict(),
        ema_state=ema.state_dict(),
        optimizer_state=optimizer.state_dict(),
        scaler_state=scaler.state_dict(),
        metadata=metadata,
    )
    # The uninterrupted run takes one more step.
    train_steps(model, optimizer, scaler, ema, steps=1, seed=2)

    # A resumed run: fresh (differently initialized, stateless) objects, then load.
    model2, optimizer2, scaler2, ema2 = make_run(optimizer_name, seed=123)
    assert not torch.equal(model2.conv1.weight, saved["model"]["conv1.weight"])  # really scrambled
    bundle = load_checkpoint_bundle(path)
    assert_same(bundle.model_state, saved["model"], "model")
    assert_same(bundle.ema_state, saved["ema"], "ema")
    assert_same(bundle.optimizer_state, saved["optimizer"], "optimizer")
    assert_same(bundle.scaler_state, saved["scaler"], "scaler")
    assert bundle.metadata == metadata
    assert all(type(key) is int for key in bundle.optimizer_state["state"])

    model2.load_state_dict(bundle.model_state)
    optimizer2.load_state_dict(bundle.optimizer_state)
    scaler2.load_state_dict(bundle.scaler_state)
    ema2.load_state_dict(bundle.ema_state, updates=bundle.metadata["ema_updates"])
    train_steps(model2, optimizer2, scaler2, ema2, steps=1, seed=2)

    assert_same(model2.state_dict(), model.state_dict(), "model after step")
    assert_same(optimizer2.state_dict(), optimizer.state_dict(), "optimizer after step")
    assert_same(scaler2.state_dict(), scaler.state_dict(), "scaler after step")
    assert_same(ema2.state_dict(), ema.state_dict(), "ema after step")
    assert ema2.updates == ema.updates == 4


def test_tensor_layout_and_metadata_are_readable_without_accelyolo(tmp_path):
    model, optimizer, scaler, ema = make_run("AdamW", seed=0)
    train_steps(model, optimizer, scaler, ema, steps=1, seed=1)
    path = save_checkpoint(
        tmp_path / "a.safetensors",
        model_state=model.state_dict(),
        ema_state=ema.state_dict(),
        optimizer_state=optimizer.state_dict(),
        rng_states=[capture_rng_state()],
        metadata={"epoch": 0},
    )
    with safe_open(path, framework="pt") as file:
        keys = set(file.keys())
        header = file.metadata()
    assert "model.conv1.weight" in keys and "ema.bn1.running_mean" in keys
    assert {"optimizer.state.0.exp_avg", "optimizer.state.0.step", "rng.0.torch", "rng.0.numpy.keys"} <= keys
    assert json.loads(header["accelyolo.format"])["version"] == FORMAT_VERSION
    assert set(json.loads(header["accelyolo.versions"])) >= {"torch", "accelerate", "accelyolo"}
    groups = json.loads(header["optimizer.param_groups"])
    assert [group["name"] for group in groups] == ["weights", "norm", "bias"]


def test_odd_tensors_and_nested_values_survive(tmp_path):
    shared = torch.arange(12, dtype=torch.float32)
    state = {
        "a": shared,
        "view_of_a": shared.view(3, 4).t(),  # shared storage and non-contiguous
        "bf16": torch.randn(2, 3).to(torch.bfloat16),
        "scalar": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0, 4),
        "flag": torch.tensor([True, False]),
    }
    optimizer_state = {
        "state": {3: {"step": torch.tensor(5.0), "buffer": torch.ones(2)}, 10: {"k": 1.5}},
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "foreach": None, "params": [3, 10], "n": 2}],
    }
    metadata = {"best_fitness": float("-inf"), "names": ["a", "b"], "nested": {"x": [1, 2.5, None]}}
    path = save_checkpoint(
        tmp_path / "odd.safetensors", model_state=state, optimizer_state=optimizer_state, metadata=metadata
    )
    bundle = load_checkpoint_bundle(path)
    assert_same(bundle.model_state, {k: v.contiguous() for k, v in state.items()}, "model")
    assert_same(bundle.optimizer_state, optimizer_state, "optimizer")
    assert bundle.metadata == metadata
    assert bundle.scaler_state is None and bundle.ema_state is None and bundle.rng_states is None


def test_state_dict_version_metadata_is_kept(tmp_path):
    model = TinyNet()
    path = save_checkpoint(tmp_path / "m.safetensors", model_state=model.state_dict())
    loaded = load_checkpoint_bundle(path).model_state
    assert loaded._metadata == model.state_dict()._metadata  # BatchNorm version numbers


def draw_all() -> list:
    return [random.random(), random.gauss(0, 1), *np.random.standard_normal(3).tolist(), *torch.rand(3).tolist()]


def test_rng_states_of_every_rank_round_trip(tmp_path):
    while random.getstate()[2] is None:  # leave a cached gaussian in python's generator
        random.gauss(0, 1)
    while np.random.get_state()[3] == 0:  # and in numpy's legacy generator
        np.random.standard_normal(1)
    rank0 = capture_rng_state()
    expected_rank0 = draw_all()
    rank1 = capture_rng_state()
    expected_rank1 = draw_all()
    path = save_checkpoint(tmp_path / "rng.safetensors", model_state={}, rng_states=[rank0, rank1])
    bundle = load_checkpoint_bundle(path)
    assert len(bundle.rng_states) == 2
    assert_same(bundle.rng_states[0], rank0, "rng0")
    restore_rng_state(bundle.rng_states[0])
    assert draw_all() == expected_rank0
    restore_rng_state(bundle.rng_states[1])
    assert draw_all() == expected_rank1


def test_scaler_state_disabled_is_empty_dict(tmp_path):
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    path = save_checkpoint(tmp_path / "s.safetensors", model_state={}, scaler_state=scaler.state_dict())
    assert load_checkpoint_bundle(path).scaler_state == {}


def test_strip_keeps_ema_weights_and_drops_training_state(tmp_path):
    model, optimizer, scaler, ema = make_run("SGD", seed=0)
    train_steps(model, optimizer, scaler, ema, steps=2, seed=1)
    metadata = {"model": {"width": 8, "nc": 3}, "names": ["a", "b", "c"], "epoch": 1, "scheduler": {"x": 1}}
    metadata.update(schedule={"accumulate": 1}, ema_updates=ema.updates)
    full = save_checkpoint(
        tmp_path / "last.safetensors",
        model_state=model.state_dict(),
        ema_state=ema.state_dict(),
        optimizer_state=optimizer.state_dict(),
        scaler_state=scaler.state_dict(),
        rng_states=[capture_rng_state()],
        metadata=metadata,
    )
    stripped = strip_checkpoint(full, tmp_path / "best_infer.safetensors")
    with safe_open(stripped, framework="pt") as file:
        names = file.keys()
    assert names and all(name.startswith("model.") for name in names)
    bundle = load_checkpoint_bundle(stripped)
    assert bundle.optimizer_state is None and bundle.rng_states is None and bundle.scaler_state is None
    assert not {"scheduler", "schedule", "ema_updates"} & set(bundle.metadata)
    assert bundle.metadata["names"] == ["a", "b", "c"] and bundle.metadata["epoch"] == 1
    assert bundle.metadata["stripped"]["weights"] == "ema"

    loaded, meta = accelyolo.load_checkpoint(str(stripped), model_factory=TinyNet)
    assert not loaded.training and meta["epoch"] == 1
    assert_same(loaded.state_dict(), ema.state_dict(), "stripped weights")

    half = strip_checkpoint(full, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < stripped.stat().st_size
    half_state = load_checkpoint_bundle(half).model_state
    assert half_state["conv1.weight"].dtype == torch.float16
    assert half_state["bn1.num_batches_tracked"].dtype == torch.int64
    loaded_half, _ = load_checkpoint(half, model_factory=TinyNet)
    torch.testing.assert_close(loaded_half.conv1.weight, ema.ema.conv1.weight, atol=1e-3, rtol=1e-3)


def test_load_checkpoint_prefers_ema_and_needs_model_config(tmp_path):
    model, optimizer, scaler, ema = make_run("SGD", seed=0)
    train_steps(model, optimizer, scaler, ema, steps=2, seed=1)
    kwargs = {"model_state": model.state_dict(), "ema_state": ema.state_dict()}
    path = save_checkpoint(tmp_path / "c.safetensors", metadata={"model": {"width": 8}}, **kwargs)
    from_ema, _ = load_checkpoint(path, model_factory=TinyNet)
    from_model, _ = load_checkpoint(path, prefer_ema=False, model_factory=TinyNet)
    assert_same(from_ema.state_dict(), ema.state_dict())
    assert_same(from_model.state_dict(), model.state_dict())

    wrong = save_checkpoint(tmp_path / "wrong.safetensors", metadata={"model": {"width": 4}}, **kwargs)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(wrong, model_factory=TinyNet)
    no_config = save_checkpoint(tmp_path / "noconfig.safetensors", **kwargs)
    with pytest.raises(CheckpointError, match="no 'model' entry") as error:
        load_checkpoint(no_config, model_factory=TinyNet)
    assert "noconfig.safetensors" in str(error.value)


def test_strip_without_ema_keeps_model_weights(tmp_path):
    model = TinyNet()
    full = save_checkpoint(tmp_path / "last.safetensors", model_state=model.state_dict(), metadata={"model": {}})
    stripped = strip_checkpoint(full, tmp_path / "infer.safetensors")
    bundle = load_checkpoint_bundle(stripped)
    assert bundle.metadata["stripped"] == {"source": "last.safetensors", "weights": "model", "half": False}
    assert_same(bundle.model_state, model.state_dict(), "model")


def test_metadata_alone_and_atomic_copy(tmp_path):
    from accelyolo.weights.checkpoint import CheckpointError, copy_checkpoint, read_checkpoint_metadata

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    src = save_checkpoint(
        tmp_path / "weights" / "last.safetensors",
        model_state=net.state_dict(),
        metadata={"epoch": 3, "config": {"imgsz": 64}},
    )
    expected = {"epoch": 3, "config": {"imgsz": 64}}
    assert read_checkpoint_metadata(src) == load_checkpoint_bundle(src).metadata == expected
    dst = copy_checkpoint(src, tmp_path / "weights" / "best.safetensors")
    assert dst.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dst.parent.iterdir()) == ["best.safetensors", "last.safetensors"]  # no temp file
    (tmp_path / "cut.safetensors").write_bytes(src.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        read_checkpoint_metadata(tmp_path / "cut.safetensors")
