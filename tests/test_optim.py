"""Parameter groups, optimizer factory and the LR / momentum / warm-up schedules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from accelyolo.training.optim import (
    accumulate_steps,
    auto_optimizer,
    build_optimizer,
    build_param_groups,
    lr_factor,
    scaled_weight_decay,
    set_lr_momentum,
    warmup_iterations,
    warmup_values,
)


class MixedNet(nn.Module):
    """Every kind of parameter: conv/linear weights and biases, BN/GN/LN, a frozen and a tied layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3)
        self.gn = nn.GroupNorm(2, 8)
        self.ln = nn.LayerNorm(8)
        self.frozen = nn.Conv2d(8, 8, 1)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(8, 4)
        self.tied = nn.Linear(8, 4)
        self.tied.weight = self.head.weight  # shared parameter: must land in one group once
        self.scale = nn.Parameter(torch.ones(1))  # a free parameter: decayed like a weight


def test_param_groups_partition_trainable_parameters():
    model = MixedNet()
    groups = build_param_groups(model, weight_decay=5e-4)
    assert [g["name"] for g in groups] == ["weights", "norm", "bias"]
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0, 0.0]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter sits in two groups"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable
    assert not {id(p) for p in model.frozen.parameters()} & set(ids)

    as_set = [{id(p) for p in g["params"]} for g in groups]
    assert as_set[0] == {id(model.stem.weight), id(model.conv.weight), id(model.head.weight), id(model.scale)}
    assert as_set[1] == {id(model.bn.weight), id(model.gn.weight), id(model.ln.weight)}
    biases = {id(m.bias) for m in (model.bn, model.conv, model.gn, model.ln, model.head, model.tied)}
    assert as_set[2] == biases


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("SGD", torch.optim.SGD),
        ("adam", torch.optim.Adam),
        ("ADAMW", torch.optim.AdamW),
        ("rmsprop", torch.optim.RMSprop),
    ],
)
def test_build_optimizer(name, cls):
    optimizer = build_optimizer(name, MixedNet(), lr=0.02, momentum=0.937, weight_decay=1e-3)
    assert type(optimizer) is cls
    assert [g["name"] for g in optimizer.param_groups] == ["weights", "norm", "bias"]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-3, 0.0, 0.0]
    for group in optimizer.param_groups:
        assert group["initial_lr"] == group["lr"] == 0.02
        if cls is torch.optim.SGD:
            assert group["nesterov"] and group["momentum"] == 0.937
        elif cls is torch.optim.RMSprop:
            assert group["momentum"] == 0.937
        else:
            assert group["betas"] == (0.937, 0.999)


def test_fused_kernels_where_torch_has_them():
    """`fused=True` (the trainer's choice on a GPU) selects torch's fused kernels for SGD, Adam and AdamW;
    their steps change the weights as the default kernels do, within float rounding."""
    from conftest import assert_close_to_scale

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    x, target = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 6, 6)  # a target: a normalised output's mean square is ~1
    for name in ("SGD", "Adam", "AdamW"):
        weights = []
        for fused in (False, True):
            copy = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
            copy.load_state_dict(model.state_dict())
            optimizer = build_optimizer(name, copy, 0.01, 0.9, 5e-4, fused=fused)
            assert bool(optimizer.defaults.get("fused")) is fused
            for _ in range(3):
                optimizer.zero_grad()
                (copy(x) - target).square().mean().backward()
                optimizer.step()
            weights.append(copy[0].weight.detach().clone())
        assert not torch.equal(weights[0], model[0].weight)
        assert_close_to_scale(weights[1], weights[0], rel=1e-5, at_least=0.0)
    assert not build_optimizer("RMSProp", model, 0.01, 0.9, 5e-4, fused=True).defaults.get("fused")


def test_unknown_optimizer_lists_choices():
    with pytest.raises(ValueError, match="choose one of SGD, Adam, AdamW, RMSProp"):
        build_optimizer("lion", MixedNet(), lr=0.01, momentum=0.9, weight_decay=0.0)


def test_no_trainable_parameters():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        build_optimizer("SGD", model, lr=0.01, momentum=0.9, weight_decay=0.0)


def test_set_lr_momentum_for_sgd_and_adam():
    for name, key in (("SGD", "momentum"), ("AdamW", "betas")):
        optimizer = build_optimizer(name, MixedNet(), lr=0.01, momentum=0.9, weight_decay=0.0)
        set_lr_momentum(optimizer, [0.1, 0.2, 0.3], momentum=0.8)
        assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.2, 0.3]
        first = optimizer.param_groups[0][key]
        assert first == (0.8 if key == "momentum" else (0.8, 0.999))
    with pytest.raises(ValueError, match="3 parameter groups"):
        set_lr_momentum(optimizer, [0.1])


def test_lr_factor_hand_computed():
    # one-cycle cosine: 1 at the start, (1 + lrf) / 2 half way, lrf at the end
    assert lr_factor(0, 100, 0.01, "cosine") == pytest.approx(1.0)
    assert lr_factor(25, 100, 0.01, "cosine") == pytest.approx(0.85501786, abs=1e-8)
    assert lr_factor(50, 100, 0.01, "cosine") == pytest.approx(0.505)
    assert lr_factor(100, 100, 0.01, "cosine") == pytest.approx(0.01)
    assert lr_factor(12.5, 100, 0.01, "cosine") == pytest.approx(0.96232037, abs=1e-8)  # fractional epoch
    # linear reaches lrf at the last epoch (epochs - 1)
    assert lr_factor(0, 11, 0.1, "linear") == pytest.approx(1.0)
    assert lr_factor(5, 11, 0.1, "linear") == pytest.approx(0.55)
    assert lr_factor(10, 11, 0.1, "linear") == pytest.approx(0.1)
    assert lr_factor(0, 1, 0.1, "linear") == pytest.approx(1.0)  # a 1-epoch run does not divide by 0
    with pytest.raises(ValueError, match="cosine, linear"):
        lr_factor(0, 10, 0.01, "step")


def test_accumulation_and_weight_decay_scaling():
    assert accumulate_steps(64, 16) == 4
    assert accumulate_steps(64, 24) == 3  # round(2.67)
    assert accumulate_steps(64, 48) == 1  # round(1.33)
    assert accumulate_steps(64, 128) == 1  # never below 1
    assert scaled_weight_decay(5e-4, 16, 4, 64) == pytest.approx(5e-4)
    assert scaled_weight_decay(5e-4, 48, 1, 64) == pytest.approx(3.75e-4)
    assert scaled_weight_decay(5e-4, 128, 1, 64) == pytest.approx(1e-3)


def test_warmup_iterations():
    assert warmup_iterations(3.0, 1000) == 3000
    assert warmup_iterations(3.0, 8) == 24  # no floor by default
    assert warmup_iterations(3.0, 8, minimum=100) == 100  # YOLOv5's floor of 100 iterations
    assert warmup_iterations(3.0, 8, minimum=100, epochs=4) == 24  # but never past the last epoch's start
    assert warmup_iterations(3.0, 8, epochs=1) == 8
    assert warmup_iterations(0.0, 1000) == 0


def test_auto_optimizer_rule():
    assert auto_optimizer(1, 45, 0.01, 0.937, 0.1) == ("AdamW", 0.002, 0.9, 0.0)
    assert auto_optimizer(7, 100, 0.01, 0.937, 0.1) == ("AdamW", 0.002, 0.9, 0.0)  # any class count
    assert auto_optimizer(80, 10_000, 0.01, 0.937, 0.1) == ("AdamW", 0.002, 0.9, 0.0)
    assert auto_optimizer(80, 10_001, 0.02, 0.95, 0.05) == ("SGD", 0.02, 0.95, 0.05)  # long runs: the hyp's SGD


HYP = {"lr0": 0.01, "warmup_bias_lr": 0.1, "warmup_momentum": 0.8, "momentum": 0.937, "nbs": 64}


def test_warmup_values_hand_computed():
    start = warmup_values(0, 100, 0, lf=1.0, total_batch=16, **HYP)
    assert start["lrs"] == pytest.approx([0.0, 0.0, 0.1])
    assert start["momentum"] == pytest.approx(0.8)
    assert start["accumulate"] == 1

    middle = warmup_values(60, 100, 0, lf=1.0, total_batch=16, **HYP)
    assert middle["lrs"] == pytest.approx([0.006, 0.006, 0.046])  # 0.1 + 0.6 * (0.01 - 0.1)
    assert middle["momentum"] == pytest.approx(0.8822)  # 0.8 + 0.6 * 0.137
    assert middle["accumulate"] == 3  # 1 + 0.6 * (4 - 1) = 2.8
    assert isinstance(middle["accumulate"], int)

    done = warmup_values(100, 100, 0, lf=1.0, total_batch=16, **HYP)
    assert done == {"lrs": [0.01, 0.01, 0.01], "momentum": 0.937, "accumulate": 4}
    assert warmup_values(5000, 100, 3, lf=1.0, total_batch=16, **HYP) == done


def test_warmup_uses_schedule_at_epoch():
    lf = lambda epoch: lr_factor(epoch, 10, 0.01, "linear")  # 1 - epoch * 0.11
    by_value = warmup_values(50, 200, 1, lf=lf(1), total_batch=64, **HYP)
    by_function = warmup_values(50, 200, 1, lf=lf, total_batch=64, **HYP)
    assert by_value == by_function
    target = 0.01 * 0.89
    assert by_value["lrs"] == pytest.approx([0.25 * target, 0.25 * target, 0.1 + 0.25 * (target - 0.1)])
    assert by_value["accumulate"] == 1  # batch 64 needs no accumulation
    assert warmup_values(0, 0, 1, lf=lf, total_batch=64, **HYP)["lrs"] == pytest.approx([target] * 3)


def test_restored_moments_take_the_layout_of_channels_last_weights():
    """A loaded state dict's moments are contiguous; `match_parameter_layout` gives them their (channels-last)
    parameters' strides, which torch's fused CUDA kernels require, without changing a value."""
    from accelyolo.training.optim import match_parameter_layout

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).to(memory_format=torch.channels_last)
    optimizer = build_optimizer("AdamW", model, 0.01, 0.9, 5e-4)
    model(torch.randn(2, 3, 8, 8)).square().mean().backward()
    optimizer.step()
    saved = optimizer.state_dict()
    # contiguous, as a file has them
    saved["state"] = {k: {n: v.contiguous() for n, v in s.items()} for k, s in saved["state"].items()}
    restored = build_optimizer("AdamW", model, 0.01, 0.9, 5e-4, fused=True)
    restored.load_state_dict(saved)
    weight = model[0].weight
    assert restored.state[weight]["exp_avg"].stride() != weight.stride()  # what torch's own loading gives
    match_parameter_layout(restored)
    for param, state in restored.state.items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert state[name].stride() == param.stride()
            torch.testing.assert_close(state[name], optimizer.state[param][name], rtol=0, atol=0)


def test_a_skipped_fp16_step_is_seen_with_a_fused_optimizer():
    """A fused optimizer's step always runs (it skips inside its kernel), so "did step run" cannot tell a
    GradScaler's skip; the trainer tells it by the lowered scale."""
    from types import SimpleNamespace

    from accelyolo.training.trainer import Trainer

    model = nn.Linear(3, 2)
    optimizer = build_optimizer("AdamW", model, 0.01, 0.9, 0.0, fused=True)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.ones(()))  # the scaler starts its scale at its first use
    host = SimpleNamespace(accelerator=SimpleNamespace(scaler=scaler, optimizer_step_was_skipped=False), _scale=None)
    for grad, skipped in ((float("inf"), True), (1.0, False), (float("nan"), True), (1.0, False)):
        for p in model.parameters():
            p.grad = torch.full_like(p, grad)
        before, weight = Trainer._scale_before_step(host), model.weight.detach().clone()
        scaler.step(optimizer)
        scaler.update()
        assert Trainer._step_was_skipped(host, before) is skipped
        assert torch.equal(model.weight, weight) is skipped  # a skipped step leaves the weights as they were
