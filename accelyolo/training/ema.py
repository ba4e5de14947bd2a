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
import operator

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
        self._cache: tuple | None = None  # see _pairing

    def decay_at(self, updates: int) -> float:
        """Decay used by the update that brings the counter to `updates`."""
        return self.decay * (1.0 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the model's current weights into the average (`model` may be wrapped: DDP, torch.compile).

        Floating-point parameters and buffers (BatchNorm running statistics included) become
        `d * ema + (1 - d) * model`; integer buffers (`num_batches_tracked`) are copied.
        """
        self.updates += 1
        d = self.decay_at(self.updates)
        ema_floats, model_floats, ema_others, model_others = self._pairing(model)
        # One call per op over all tensors: the same arithmetic as a per-tensor mul_/add_ loop, bit for bit.
        torch._foreach_mul_(ema_floats, d)
        torch._foreach_add_(ema_floats, model_floats, alpha=1.0 - d)
        if ema_others:
            torch._foreach_copy_(ema_others, model_others)

    def _pairing(self, model: nn.Module) -> tuple[list[torch.Tensor], ...]:
        """The EMA's float tensors with the model's, and its other tensors with the model's, matched by name.

        The update runs after every optimizer step, and on a small model matching ~350 entries by name costs
        as much as the arithmetic; so the matching is kept while both state dicts hold the very same tensor
        objects (checked by identity at each call: a replaced buffer or a loaded copy is matched again).
        `keep_vars`: the tensors themselves, not a detached alias made per entry on every call.
        """
        ema_state = self.ema.state_dict(keep_vars=True)
        ema_values = tuple(ema_state.values())
        model_state = extract_model_from_parallel(model, keep_torch_compile=False).state_dict(keep_vars=True)
        model_values = tuple(model_state.values())
        cached = self._cache
        if (
            cached is not None
            and len(cached[0]) == len(ema_values)
            and len(cached[1]) == len(model_values)
            and all(map(operator.is_, cached[0], ema_values))
            and all(map(operator.is_, cached[1], model_values))
        ):
            return cached[2]
        pairing: tuple[list[torch.Tensor], ...] = ([], [], [], [])
        converted = False
        for name, ema_value in ema_state.items():
            value = model_state.get(name)
            if value is None:
                raise KeyError(
                    f"ModelEMA.update: the model has no entry '{name}' that the EMA copy has; "
                    "update the EMA with the same architecture it was created from"
                )
            if value.dtype != ema_value.dtype or value.device != ema_value.device:
                value, converted = value.to(ema_value.device, ema_value.dtype), True  # a copy: not kept
            side = 0 if ema_value.is_floating_point() else 2
            pairing[side].append(ema_value)
            pairing[side + 1].append(value)
        self._cache = None if converted else (ema_values, model_values, pairing)
        return pairing

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
