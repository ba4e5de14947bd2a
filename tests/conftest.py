"""Shared fixtures: a tiny demo dataset written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

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
