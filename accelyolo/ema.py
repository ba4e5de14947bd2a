"""Exponential moving average of model weights, with a warm-up of the decay.

The EMA model is what gets validated and exported: averaging the weights over the last few
thousand optimizer steps gives a smoother, usually better, detector than the raw weights. Early in
training the raw weights move fast and an average with decay 0.9999 would be dominated by the
random initialization, so the decay ramps up as `decay * (1 - exp(-updates / tau))`: near 0 for
the first updates (the EMA follows the model), about 63 % of `decay` after `tau` updates, and
close to `decay` after a few `tau`.

Call `update` only after a real optimizer step (not on accumulation micro-steps and not when the
GradScaler skipped the step), on every rank, so every rank holds the same EMA and can validate.
"""

from __future__ import annotations

import copy
import math

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """Keep an exponential moving average of a model's parameters and buffers.

    Args:
        model: the model being trained (wrappers are unwrapped); it is deep-copied.
        decay: the decay the ramp approaches.
        tau: the number of updates over which the decay ramps up (e-folding constant).
        updates: updates already done, when resuming (sets the point on the ramp).

    Attributes:
        ema: the averaged copy, in eval mode, with `requires_grad=False` everywhere.
        updates: number of `update` calls so far; store it in checkpoint metadata.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ModelEMA decay must be in [0, 1), got {decay}")
        if tau <= 0:
            raise ValueError(f"ModelEMA tau must be > 0 (a number of updates), got {tau}")
        self.ema = copy.deepcopy(extract_model_from_parallel(model, keep_torch_compile=False)).eval()
        self.ema.requires_grad_(False)
        self.decay = float(decay)
        self.tau = float(tau)
        self.updates = int(updates)

    def decay_at(self, updates: int) -> float:
        """Decay used by the update that brings the counter to `updates`."""
        return self.decay * (1.0 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the model's current weights into the average.

        Floating-point parameters and buffers (BatchNorm running statistics included) become
        `d * ema + (1 - d) * model`; integer buffers (`num_batches_tracked`) are copied.
        """
        self.updates += 1
        d = self.decay_at(self.updates)
        model_state = extract_model_from_parallel(model, keep_torch_compile=False).state_dict()
        ema_floats, model_floats = [], []
        for name, ema_value in self.ema.state_dict().items():
            if name not in model_state:
                raise KeyError(
                    f"ModelEMA.update: the model has no entry '{name}' that the EMA copy has; "
                    "update the EMA with the same architecture it was created from"
                )
            value = model_state[name].detach().to(ema_value.device, ema_value.dtype)
            if ema_value.is_floating_point():
                ema_floats.append(ema_value)
                model_floats.append(value)
            else:
                ema_value.copy_(value)
        # One fused call per op over all tensors (the same arithmetic as a per-tensor mul_/add_ loop).
        torch._foreach_mul_(ema_floats, d)
        torch._foreach_add_(ema_floats, model_floats, alpha=1.0 - d)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, as `nn.Module.state_dict()` gives them.

        The counter is not part of it: save `self.updates` in the checkpoint metadata
        (`"ema_updates"`), so the tensors stay a plain state dict that a model can load.
        """
        return self.ema.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], updates: int | None = None) -> None:
        """Load averaged weights (strictly: every key must match) and optionally the counter."""
        self.ema.load_state_dict(state_dict, strict=True)
        if updates is not None:
            self.updates = int(updates)
