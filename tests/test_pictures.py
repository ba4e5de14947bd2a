"""Pictures where people look: tracker images (tensorboard event file) and results.png."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from accelyolo.commands.fit import fit
from accelyolo.evaluation.plots import plot_results
from accelyolo.training.pictures import ResultsPlotCallback, validation_predictions
from tests.conftest import tiny_train_options

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tensorboard_event_file_holds_train_batches_and_validation_predictions(tiny_demo, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=2, log_with="tensorboard", max_steps_per_epoch=3))
    events = EventAccumulator(str(result.run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = set(events.Tags()["images"])
    assert {"train_batch0", "train_batch1", "train_batch2", "val_predictions"} <= tags
    assert [e.step for e in events.Images("val_predictions")] == [1, 2]  # one picture per validation
    first = events.Images("train_batch0")[0]
    assert first.step == 1 and first.width >= 64 and first.encoded_image_string[:4] == b"\x89PNG"
    assert "metrics/mAP50-95" in events.Tags()["scalars"]


class Scripted(torch.nn.Module):
    """A 'model' whose eval output holds 8 boxes per image: scores 0.9 .. 0.2, one class, apart."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b = x.shape[0]
        boxes = torch.tensor([[8.0 * i + 4, 8.0 * i + 4, 6.0, 6.0] for i in range(8)])
        scores = torch.linspace(0.9, 0.2, 8).view(8, 1)
        return torch.cat((boxes, scores, torch.zeros(8, 3)), 1).expand(b, 8, 8)


def test_validation_pictures_keep_at_most_five_boxes_above_0_3(tiny_demo):
    from accelyolo.data import YoloDataset, load_data_yaml

    spec = load_data_yaml(tiny_demo)
    dataset = YoloDataset(spec.splits["val"], imgsz=64, augment=False, hyp=None, names=spec.names)
    grid, detections = validation_predictions(Scripted(), dataset, list(spec.names))
    assert len(detections) == 4
    for det in detections:
        assert det.shape == (5, 6) and float(det[:, 4].min()) >= 0.3
    assert grid.size[0] >= 2 * 64 and grid.mode == "RGB"
    _, few = validation_predictions(Scripted(), dataset, list(spec.names), conf_thres=0.75)
    assert all(len(d) == 2 for d in few)  # 0.9 and 0.8 only


def test_results_png_draws_each_column_and_skips_empty_cells(tmp_path):
    rows = [
        {"epoch": 1, "train/box_loss": 3.0, "metrics/mAP50": None, "lr/pg0": 0.01, "time_s": 1.0},
        {"epoch": 2, "train/box_loss": 2.0, "metrics/mAP50": 0.1, "lr/pg0": 0.01, "time_s": 1.0},
        {"epoch": 3, "train/box_loss": 1.0, "metrics/mAP50": 0.3, "lr/pg0": 0.01, "time_s": 1.0},
    ]
    path = plot_results(rows, tmp_path / "results.png")
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (150, 2 * 220, 3)  # two charts: box loss and mAP50 (no lr, no time)
    line = np.all(image == (255, 56, 56), axis=-1)
    assert line[:, :220].sum() > 20 and line[:, 220:].sum() > 20  # a line in each chart
    empty = plot_results([{"epoch": 1, "metrics/mAP50": ""}], tmp_path / "empty.png")
    assert not np.all(np.asarray(Image.open(empty).convert("RGB")) == (255, 56, 56), axis=-1).any()


def test_results_png_is_refreshed_each_epoch_and_continues_on_resume(tiny_demo, tmp_path):
    from accelyolo.training.callbacks import Callback

    seen = []

    class Look(Callback):
        def on_epoch_end(self, trainer, row):
            path = trainer.run_dir / "results.png"
            seen.append(path.stat().st_mtime_ns if path.exists() else None)

        def on_fit_end(self, trainer):
            seen.append(Image.open(trainer.run_dir / "results.png").size)
            plotter = next(c for c in trainer.callbacks if isinstance(c, ResultsPlotCallback))
            seen.append([int(float(r["epoch"])) for r in plotter.rows])

    class StopAfterFirst(Callback):
        def on_epoch_end(self, trainer, row):
            trainer.request_stop()

    opts = tiny_train_options(tiny_demo, tmp_path, epochs=2, plots=True, max_steps_per_epoch=2)
    stopped = fit(callbacks=[StopAfterFirst()], **opts)
    before = (stopped.run_dir / "results.png").stat().st_mtime_ns
    fit(callbacks=[Look()], resume=str(stopped.last_checkpoint))
    with (stopped.run_dir / "results.csv").open() as handle:
        assert [r["epoch"] for r in csv.DictReader(handle)] == ["1", "2"]
    assert len(seen) == 3 and seen[0] != before  # redrawn after epoch 2
    assert seen[1] == (5 * 220, 2 * 150) and seen[2] == [
        1,
        2,
    ]  # epoch 1 read back from results.csv  # box, cls, dfl, P, R, mAP50, mAP50-95, fitness: 2 rows
