"""Shared fixtures: a tiny demo dataset written once per test session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# No test reaches the Hugging Face Hub, nor reads or fills the developer's Hub cache: huggingface_hub reads
# these when it is first imported (the Hub tests point its constants at a folder of their own as well).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="accelyolo-tests-hf-")
os.environ["HF_HUB_CACHE"] = os.path.join(os.environ["HF_HOME"], "hub")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], True)

SHARED = Path(__file__).resolve().parents[2] / "shared"
COCO128 = SHARED / "datasets" / "coco128"

# The smallest registered model of each family: real architectures at a tiny width, for fast tests.
TINY_ANCHOR_FREE = "yolov8t"
TINY_ANCHOR_BASED = "yolov5t"


@pytest.fixture
def one_thread():
    """Tiny models run faster single-threaded (and steadier on a shared machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """data.yaml of a small demo dataset (48 train / 16 val images of 64 px)."""
    from accelyolo.data.demo import generate_demo

    root = tmp_path_factory.mktemp("demo")
    return generate_demo(root, n_train=48, n_val=16, imgsz=64, seed=0)


def tiny_train_options(data_yaml: Path, project: Path, **extra) -> dict:
    """fit() keywords for a seconds-long CPU run on the tiny demo data."""
    options = dict(
        data=str(data_yaml),
        model=TINY_ANCHOR_FREE,
        imgsz=64,
        batch_size=8,
        epochs=2,
        workers=0,
        project=str(project),
        name="exp",
        warmup_epochs=0.0,
        plots=False,
        rect_val=False,
        close_mosaic=0,
    )
    options.update(extra)
    return options


def assert_close_to_scale(got, expected, rel: float = 1e-5, dim: int | None = None, at_least: float = 1.0) -> None:
    """Assert |got - expected| <= rel * scale: a float tolerance stated relative to the magnitude compared.

    `scale` is the largest |expected| (per index along `dim` when it is given: the last dim of a detector's
    (B, N, 4 + nc) output holds box columns of hundreds of pixels and score columns of at most 1), and never
    less than `at_least`. Rounding error in a value grows with the magnitudes it was computed from, not with
    the value: a box corner near 0 px is a centre minus a half-width of hundreds of px, and float32 steps are
    6.1e-5 between 512 and 1024. So an element-wise rtol is too tight near zero, and a fixed atol too tight
    once values are large; `at_least` keeps values of unit-sized operands (scores, centred logits) at `rel`.
    """
    import numpy as np

    got, expected = (np.asarray(v, dtype=np.float64) for v in (got, expected))  # CPU tensors convert
    assert got.shape == expected.shape, (got.shape, expected.shape)
    magnitude = np.abs(expected)
    if dim is None:
        scale = magnitude.max(initial=0.0)
    else:
        others = tuple(axis for axis in range(expected.ndim) if axis != dim % expected.ndim)
        scale = magnitude.max(axis=others, keepdims=True, initial=0.0)
    tolerance = np.broadcast_to(rel * np.maximum(scale, at_least), expected.shape)
    diff = np.abs(got - expected)
    within = diff <= tolerance  # False where either side is NaN
    if not within.all():
        excess = np.where(within, 0.0, np.nan_to_num(diff / np.maximum(tolerance, 1e-300), nan=np.inf))
        at = tuple(int(i) for i in np.unravel_index(np.argmax(excess), excess.shape))
        raise AssertionError(
            f"|got - expected| = {diff[at]:.3g} at index {at} (got {got[at]:.9g}, expected {expected[at]:.9g}) "
            f"is over the tolerance {tolerance[at]:.3g} = {rel:g} x scale"
        )
