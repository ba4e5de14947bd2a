"""ModelEMA: decay ramp, blending of floats, copying of integer buffers, unwrapping."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn

from accelyolo.training.ema import ModelEMA


def tiny_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def perturb(model: nn.Module, step: int) -> None:
    """Change every parameter and buffer like a training step would (deterministically)."""
    with torch.no_grad():
        for i, param in enumerate(model.parameters()):
            param.add_(0.1 * (i + 1) * step)
        model(torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(step)))  # BN stats


def test_copy_is_independent_eval_and_frozen():
    model = tiny_model()
    ema = ModelEMA(model)
    assert not ema.ema.training
    assert all(not p.requires_grad for p in ema.ema.parameters())
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(ema.ema.parameters(), model.parameters(), strict=True))
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_decay_ramp_values():
    ema = ModelEMA(tiny_model(), decay=0.9999, tau=2000)
    assert ema.decay_at(0) == 0.0
    assert ema.decay_at(2000) == pytest.approx(0.9999 * (1 - math.exp(-1)))  # 0.632057...
    assert ema.decay_at(2000) == pytest.approx(0.63205735, abs=1e-8)
    assert ema.decay_at(200) == pytest.approx(0.9999 * 0.09516258, abs=1e-8)
    assert ema.decay_at(100_000) == pytest.approx(0.9999, abs=1e-12)
    values = [ema.decay_at(n) for n in range(0, 10_000, 500)]
    assert values == sorted(values)


def test_update_blends_floats_and_copies_integers():
    model = tiny_model()
    ema = ModelEMA(model, decay=0.9, tau=3)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    perturb(model, step=1)
    ema.update(model)
    assert ema.updates == 1
    d = 0.9 * (1 - math.exp(-1 / 3))
    for name, value in ema.state_dict().items():
        current = model.state_dict()[name]
        if value.is_floating_point():
            torch.testing.assert_close(value, d * before[name] + (1 - d) * current, rtol=0, atol=1e-6)
            assert not torch.equal(value, current), name  # really blended, not copied
        else:
            assert torch.equal(value, current), name  # num_batches_tracked
    assert ema.state_dict()["1.num_batches_tracked"].item() == 1
    assert all(v.grad_fn is None for v in ema.state_dict().values())


def test_start_of_ramp_follows_model_and_resumed_counter_holds_still():
    model = tiny_model()
    fresh = ModelEMA(model, decay=0.9999, tau=1e6)  # first decay ~1e-6: the EMA follows the model
    late = ModelEMA(model, decay=0.9999, tau=10, updates=10_000)  # deep in the ramp: decay ~0.9999
    start = {k: v.clone() for k, v in late.state_dict().items()}
    perturb(model, step=1)
    fresh.update(model)
    late.update(model)
    assert late.updates == 10_001
    for name, value in fresh.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[name], rtol=0, atol=1e-5)
        if value.is_floating_point():
            moved = (late.state_dict()[name] - start[name]).abs().max()
            change = (model.state_dict()[name] - start[name]).abs().max()
            assert moved <= 1.01e-4 * change + 1e-7, name


def test_wrapped_models_are_unwrapped():
    model = tiny_model()
    wrapped = torch.compile(torch.nn.DataParallel(model))  # the order accelerate.prepare wraps in
    assert extract_model_from_parallel(wrapped, keep_torch_compile=False) is model
    ema = ModelEMA(wrapped, decay=0.9, tau=1)
    assert set(ema.state_dict()) == set(model.state_dict())
    reference = ModelEMA(model, decay=0.9, tau=1)
    perturb(model, step=2)
    ema.update(wrapped)
    reference.update(model)
    for name, value in ema.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name


def test_state_dict_round_trip_and_resume():
    model = tiny_model()
    ema = ModelEMA(model, decay=0.99, tau=2)
    for step in range(1, 4):
        perturb(model, step)
        ema.update(model)
    resumed = ModelEMA(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)))
    resumed.decay, resumed.tau = 0.99, 2.0
    resumed.load_state_dict(ema.state_dict(), updates=ema.updates)
    assert resumed.updates == 3
    perturb(model, 4)
    ema.update(model)
    resumed.update(model)
    for name, value in ema.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    with pytest.raises(RuntimeError):
        resumed.load_state_dict({"0.weight": torch.zeros(4, 3, 3, 3)})  # strict


def test_bad_arguments():
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(tiny_model(), decay=1.0)
    with pytest.raises(ValueError, match="tau"):
        ModelEMA(tiny_model(), tau=0)


def reference_update(ema_state: dict[str, torch.Tensor], model: nn.Module, d: float) -> None:
    """The update written out per tensor: `ema.mul_(d).add_(model, alpha=1 - d)`, integers copied."""
    for name, value in model.state_dict().items():
        if ema_state[name].is_floating_point():
            ema_state[name].mul_(d).add_(value.to(ema_state[name].dtype), alpha=1.0 - d)
        else:
            ema_state[name].copy_(value)


def test_update_equals_the_per_tensor_formula_bit_for_bit():
    model = tiny_model()
    ema = ModelEMA(model, decay=0.99, tau=2)
    expected = {k: v.clone() for k, v in ema.state_dict().items()}
    for step in range(1, 6):
        perturb(model, step)
        ema.update(model)
        reference_update(expected, model, ema.decay_at(step))
        for name, value in ema.state_dict().items():
            assert torch.equal(value, expected[name]), (step, name)


def nudge(model: nn.Module, step: int) -> None:
    with torch.no_grad():
        for value in model.state_dict().values():
            value.add_(0.01 * step if value.is_floating_point() else step)


def test_update_sees_replaced_tensors_and_other_dtypes():
    model = tiny_model()
    ema = ModelEMA(model, decay=0.5, tau=1e-9)  # decay 0.5 from the first update
    ema.update(model)
    model[1].running_mean = torch.full((4,), 8.0)  # a new buffer object, as module.to() would make
    before = ema.state_dict()["1.running_mean"].clone()
    ema.update(model)
    assert torch.equal(ema.state_dict()["1.running_mean"], 0.5 * before + 0.5 * torch.full((4,), 8.0))
    model.double()  # the model's floats in another dtype: converted to the EMA's float32 at each update
    nudge(model, 3)
    expected = {k: v.clone() for k, v in ema.state_dict().items()}
    ema.update(model)
    reference_update(expected, model, 0.5)
    for name, value in ema.state_dict().items():
        assert value.dtype == expected[name].dtype and torch.equal(value, expected[name]), name
    nudge(model, 4)  # again: nothing converted is kept from the update before
    ema.update(model)
    reference_update(expected, model, 0.5)
    for name, value in ema.state_dict().items():
        assert torch.equal(value, expected[name]), name
