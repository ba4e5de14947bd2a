"""accelyolo.core.rng: seeding and capture/restore of every generator a training run draws from."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from accelyolo.core.rng import capture_rng_state, restore_rng_state, use_deterministic_algorithms


def draws() -> list[float]:
    """A mix of draws, normals included (python and numpy cache every second gaussian)."""
    return [
        random.random(),
        random.gauss(0.0, 1.0),
        *np.random.rand(2).tolist(),
        *np.random.standard_normal(3).tolist(),
        *torch.rand(2).tolist(),
        *torch.randn(3).tolist(),
    ]


def test_capture_restore_repeats_draws():
    # Leave cached gaussians in both states (each normal draw flips the cache on or off).
    while np.random.get_state()[3] == 0:
        np.random.standard_normal(1)
    while random.getstate()[2] is None:
        random.gauss(0.0, 1.0)
    state = capture_rng_state()
    assert state["python"]["gauss_next"] is not None
    assert state["numpy"]["has_gauss"] == 1
    first = draws()
    assert draws() != first
    restore_rng_state(state)
    assert draws() == first


def test_state_holds_only_tensors_and_json_scalars():
    state = capture_rng_state()
    assert state["torch"].dtype == torch.uint8
    assert state["python"]["state"].shape == (625,) and state["numpy"]["keys"].shape == (624,)
    assert state["cuda"] == [] or all(t.dtype == torch.uint8 for t in state["cuda"])

    def leaves(obj):
        if isinstance(obj, dict):
            for value in obj.values():
                yield from leaves(value)
        elif isinstance(obj, list):
            for value in obj:
                yield from leaves(value)
        else:
            yield obj

    assert all(isinstance(x, torch.Tensor | int | float | str | type(None)) for x in leaves(state))


def test_deterministic_flags(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    try:
        use_deterministic_algorithms()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:  # leave the process as the other tests expect it
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def test_restore_rejects_incomplete_state():
    state = capture_rng_state()
    del state["numpy"]
    with pytest.raises(ValueError, match=r"missing \['numpy'\]"):
        restore_rng_state(state)
