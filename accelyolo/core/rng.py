"""Random number generator state: seeding, capture and restore.

A resumed run should draw the same augmentations and the same sampler order as an uninterrupted
one, so every generator the training loop touches (python `random`, numpy's global generator,
torch CPU and every CUDA device) is captured into a checkpoint. The captured state is a nested
dict of tensors and JSON scalars, so `accelyolo.weights.checkpoint` stores it in a safetensors file with
no pickle involved.

Nothing here runs at import time: determinism flags change global state only when
`use_deterministic_algorithms` is called.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_state", "restore_rng_state", "use_deterministic_algorithms"]


def use_deterministic_algorithms() -> None:
    """Ask torch for deterministic kernels (`warn_only=True`: an op without a deterministic
    implementation warns instead of failing), turn off cuDNN autotuning and set
    `CUBLAS_WORKSPACE_CONFIG`, which deterministic cuBLAS needs. Slower; for bit-identical reruns.
    Seeding itself is `accelerate.utils.set_seed(seed, device_specific=True)` (seed + rank)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"


def capture_rng_state() -> dict[str, Any]:
    """Capture the state of every random generator used in training.

    Returns:
        `{"python": {...}, "numpy": {...}, "torch": uint8 tensor, "cuda": [uint8 tensor, ...]}`.
        The python and numpy key arrays are int64 tensors (their words are uint32, which
        safetensors and torch handle less uniformly than int64); every other leaf is a JSON scalar.
        `"cuda"` is an empty list when CUDA is not available.
    """
    py_version, py_words, py_gauss_next = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached_gaussian = np.random.get_state(legacy=True)
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_words, dtype=torch.int64),  # (625,): 624 words + position
            "gauss_next": py_gauss_next,
        },
        "numpy": {
            "algorithm": str(np_name),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),  # (624,)
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": [state.cpu() for state in cuda_states],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put every generator back into a state returned by `capture_rng_state`.

    Tensors may live on any device (a bundle loaded onto a GPU); they are moved to the CPU,
    where torch expects generator states. CUDA states are restored for the devices that exist:
    a checkpoint written on a 4-GPU machine resumes on a 1-GPU or CPU-only one, with only the
    generators that exist there restored.

    Raises:
        ValueError: a section is missing or has the wrong form (names the section).
    """
    missing = [key for key in ("python", "numpy", "torch") if key not in state]
    if missing:
        raise ValueError(
            f"RNG state is missing {missing}; expected the dict returned by "
            "accelyolo.core.rng.capture_rng_state() with keys 'python', 'numpy', 'torch', 'cuda'"
        )
    py = state["python"]
    words = tuple(int(word) for word in py["state"].cpu().tolist())
    gauss_next = py["gauss_next"]
    random.setstate((int(py["version"]), words, None if gauss_next is None else float(gauss_next)))

    npy = state["numpy"]
    keys = npy["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((npy["algorithm"], keys, int(npy["pos"]), int(npy["has_gauss"]), float(npy["cached_gaussian"])))

    torch.set_rng_state(state["torch"].detach().to("cpu", torch.uint8))
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        for index in range(min(len(cuda_states), torch.cuda.device_count())):
            torch.cuda.set_rng_state(cuda_states[index].detach().to("cpu", torch.uint8), index)
