"""Pillow pictures: batch grids with boxes, label distribution, draw_boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from accelyolo.evaluation.plots import class_colour, draw_boxes, plot_batch, plot_labels


def test_draw_boxes_draws_outline_in_class_colour():
    img = np.zeros((64, 64, 3), np.uint8)
    out = np.asarray(draw_boxes(img, [[10, 20, 40, 50]], [3], names=["a", "b", "c", "d"], scores=[0.9]))
    assert tuple(out[35, 10]) == class_colour(3) and tuple(out[50, 25]) == class_colour(3)
    assert tuple(out[35, 25]) == (0, 0, 0)  # inside stays untouched
    assert (img == 0).all()  # input not modified


def test_plot_batch_with_targets_and_preds(tmp_path: Path):
    images = torch.zeros((5, 3, 64, 96), dtype=torch.uint8)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.5, 0.5], [4, 0, 0.25, 0.25, 0.2, 0.2]])
    preds = [torch.tensor([[5.0, 5.0, 30.0, 30.0, 0.8, 1.0]])] * 5
    out = plot_batch(images, targets, [f"/x/{k}.jpg" for k in range(5)], ["a", "b"], tmp_path / "b.png", preds=preds)
    im = np.asarray(Image.open(out))
    assert im.shape == (2 * (64 + 12), 3 * 96, 3)
    x1 = round(0.25 * 96)  # image 0, class 1 box: left edge at x=24, y from 16 to 48
    assert tuple(im[32, x1]) == class_colour(1)
    assert tuple(im[64 + 12 + 20, 96 + 5]) == class_colour(1)  # prediction on tile 4 (row 1, col 1)
    plot_batch(images, None, [], ["a", "b"], tmp_path / "none.png")
    assert (tmp_path / "none.png").is_file()


def test_plot_labels(tmp_path: Path):
    labels = [np.array([[0, 0.5, 0.5, 0.2, 0.3], [1, 0.1, 0.9, 0.05, 0.05]], np.float32), np.zeros((0, 5))]
    out = plot_labels(labels, ["a", "b", "c"], tmp_path / "labels.png")
    im = np.asarray(Image.open(out))
    assert im.shape[2] == 3 and im.shape[1] > 900
    assert (im == class_colour(0)).all(2).sum() > 100  # the class-0 bar
    plot_labels([], ["a"], tmp_path / "empty.png")
