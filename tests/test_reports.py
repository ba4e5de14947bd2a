"""Tests of accelyolo.evaluation.reports: PNG plots written by Pillow and the per-class rich table."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from accelyolo.evaluation.metrics import DetectionEvaluator, DetectionResult
from accelyolo.evaluation.reports import per_class_table, plot_confusion_matrix, plot_curves

CURVES = ("PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png")


def evaluate(nc: int, n_images: int = 12, seed: int = 0) -> DetectionResult:
    rng = np.random.default_rng(seed)
    ev = DetectionEvaluator(nc=nc)
    for i in range(n_images):
        m = int(rng.integers(1, 5))
        xy = rng.uniform(0, 100, (m, 2))
        gt = np.c_[xy, xy + rng.uniform(8, 30, (m, 2))]
        cls = rng.integers(0, nc, m)
        wrong = np.where(rng.random(m) < 0.2, rng.integers(0, nc, m), cls)
        preds = np.c_[gt + rng.normal(0, 2, gt.shape), rng.uniform(0.1, 1, m), wrong]
        ev.add(f"{i}.jpg", preds, gt, cls)
    return ev.compute()


def class_names(nc: int) -> list[str]:
    return [f"class_{i}" for i in range(nc)]


@pytest.mark.parametrize("nc", [3, 40])
def test_plots_are_written_as_png(tmp_path, nc: int) -> None:
    res = evaluate(nc)
    paths = plot_curves(res, class_names(nc), tmp_path / "run")
    paths.append(plot_confusion_matrix(res, class_names(nc), tmp_path / "run"))
    assert sorted(p.name for p in paths) == sorted([*CURVES, "confusion_matrix.png"])
    for path in paths:
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert min(im.size) >= 400
            pixels = np.asarray(im.convert("RGB"))
        drawn = (pixels < 200).any(axis=2).mean()  # share of non-white pixels
        assert 0.005 < drawn < 0.9


def test_confusion_matrix_cells_follow_the_normalised_matrix(tmp_path) -> None:
    """A perfect diagonal draws dark cells on the diagonal and light ones elsewhere."""
    ev = DetectionEvaluator(nc=2)
    box = np.array([[10.0, 10.0, 40.0, 40.0]])
    for i in range(4):
        ev.add(str(i), np.c_[box, [[0.9]], [[i % 2]]], box, np.array([i % 2]))
    path = plot_confusion_matrix(ev.compute(), ["a", "b"], tmp_path)
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    # 3x3 cells (2 classes + background): only the two diagonal class cells are dark blue (1.0).
    dark_blue = (rgb[..., 0] < 40) & (rgb[..., 2] > 90)
    ys, xs = np.nonzero(dark_blue)
    cells = xs < xs.max() - 30  # the rightmost dark object is the colour bar (24 px wide)
    ys, xs = ys[cells], xs[cells]
    assert xs.size > 2 * 60 * 60
    assert ys.max() - ys.min() > 120  # two blocks at different heights, not one row
    assert np.corrcoef(xs, ys)[0, 1] > 0.6  # going down-right (two diagonal squares: 0.75)


def test_plots_without_ground_truth_still_write_files(tmp_path) -> None:
    ev = DetectionEvaluator(nc=2)
    ev.add("0", np.array([[1.0, 1.0, 5.0, 5.0, 0.5, 1.0]]), np.zeros((0, 4)), np.zeros(0))
    res = ev.compute()
    plot_curves(res, ["a", "b"], tmp_path)
    plot_confusion_matrix(res, ["a", "b"], tmp_path)
    assert all((tmp_path / name).is_file() for name in (*CURVES, "confusion_matrix.png"))


def test_per_class_table_rows() -> None:
    res = evaluate(4, n_images=20, seed=1)
    names = ["cat", "dog", "bird", "fish"]
    table = per_class_table(res, names)
    headers = [c.header for c in table.columns]
    assert headers == ["Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"]
    cells = [list(c.cells) for c in table.columns]
    assert cells[0][0] == "all"
    assert cells[0][1:] == [names[c] for c in res.classes]
    assert cells[1][0] == "20"
    assert cells[2][0] == str(int(res.n_instances.sum()))
    assert cells[5][0] == f"{res.map50:.3f}" and cells[6][0] == f"{res.map:.3f}"
    k = 1
    assert cells[6][k + 1] == f"{res.ap[k]:.3f}"
    console = Console(record=True, width=120)
    console.print(table)
    assert "mAP50-95" in console.export_text()
