"""Issue 13 items 1, 7 and 9: nothing in a real dataset is lost silently.

1. `single_cls` keeps every box (all classes become the one class `item`) in training, `accelyolo val`,
   `accelyolo data check` and `predict`.
7. An image that becomes unreadable during training is replaced by another sample, named in a warning,
   and counted at the end of the epoch.
9. Training reports, per split, what the checks found and writes every skipped file and dropped row to
   `data_report.json` in the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from accelyolo import fit
from accelyolo.training.callbacks import Callback
from tests.conftest import TINY_ANCHOR_FREE
from tests.real_data_helpers import NAMES, write_shapes_set


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    """A 3-class set of 10 real-sized images (train = val), and its box count."""
    data_yaml, truth = write_shapes_set(tmp_path_factory.mktemp("three"), n=10, seed=11)
    boxes = sum(len(b) for b in truth.values())
    assert {c for b in truth.values() for c, *_ in b} == {0, 1, 2}
    return data_yaml, truth, boxes


def _options(data_yaml, project, **extra):
    options = dict(
        data=str(data_yaml),
        model=TINY_ANCHOR_FREE,
        imgsz=64,
        batch_size=4,
        epochs=1,
        workers=0,
        project=str(project),
        name="exp",
        warmup_epochs=0.0,
        plots=False,
        rect_val=True,
        close_mosaic=0,
        max_steps_per_epoch=1,
    )
    options.update(extra)
    return options


class Capture(Callback):
    def on_fit_start(self, trainer):
        self.train_boxes = [lb.copy() for lb in trainer.train_dataset.labels]
        self.val_boxes = [lb.copy() for lb in trainer.val_dataset.labels]
        self.names = list(trainer.names)


def test_single_cls_dataset_keeps_every_box(three_classes):
    from accelyolo.data import YoloDataset

    data_yaml, truth, boxes = three_classes
    plain = YoloDataset(sorted(truth), imgsz=64, names=NAMES)
    single = YoloDataset(sorted(truth), imgsz=64, names=NAMES, single_cls=True)
    assert sum(len(lb) for lb in plain.labels) == sum(len(lb) for lb in single.labels) == boxes
    assert all((lb[:, 0] == 0).all() for lb in single.labels)
    assert single.names == ["item"] and plain.names == NAMES
    for a, b in zip(plain.labels, single.labels):
        np.testing.assert_array_equal(a[:, 1:], b[:, 1:])


def test_single_cls_trains_validates_checks_and_predicts_every_box(three_classes, tmp_path, capsys):
    from accelyolo.commands.predict import predict
    from accelyolo.commands.validate import validate
    from accelyolo.data.check import main as check_main

    data_yaml, truth, boxes = three_classes
    seen = Capture()
    done = fit(callbacks=[seen], **_options(data_yaml, tmp_path, single_cls=True))
    assert seen.names == ["item"]
    assert sum(len(lb) for lb in seen.train_boxes) == sum(len(lb) for lb in seen.val_boxes) == boxes
    assert all((lb[:, 0] == 0).all() for lb in seen.train_boxes)

    out = validate(
        str(done.last_checkpoint),
        data=str(data_yaml),
        imgsz=64,
        batch_size=4,
        workers=0,
        plots=False,
        project=str(tmp_path / "val"),
        verbose=False,
    )
    assert int(out.result.n_instances.sum()) == boxes  # every box validated as 'item'

    capsys.readouterr()
    assert check_main([str(data_yaml), "--json", "--single-cls"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["names"] == ["item"]
    assert report["splits"]["val"]["boxes_per_class"] == {"item": boxes}

    found = predict(str(done.last_checkpoint), sorted(truth)[0], imgsz=64, conf_thres=0.0, device="cpu")
    assert found[0].names and set(found[0].names) == {"item"}


def _spoil(data_yaml):
    """Give the set one of every problem the checks know; returns {label file name: (line, word)} expected."""
    root = data_yaml.parent
    images, labels = root / "images" / "val", root / "labels" / "val"
    stems = sorted(p.stem for p in images.iterdir())
    (images / "900001.png").write_text("not an image")  # corrupt: skipped
    (labels / f"{stems[0]}.txt").unlink()  # missing label: background
    (labels / f"{stems[1]}.txt").write_text("")  # empty label: background
    good = "0 0.5 0.5 0.2 0.2\n"
    (labels / f"{stems[2]}.txt").write_text(good + "7 0.5 0.5 0.1 0.1\n")  # class >= nc, line 2
    (labels / f"{stems[3]}.txt").write_text(good + "1 1.3 0.5 0.1 0.1\n")  # out of range, line 2
    (labels / f"{stems[4]}.txt").write_text(good + good)  # a duplicate
    (labels / f"{stems[5]}.txt").write_text("0 0.05 0.5 0.2 0.2\n")  # sticks out: clipped, line 1
    return stems


def test_training_reports_every_split_and_writes_data_report_json(tmp_path, caplog):
    import logging

    data_yaml, _ = write_shapes_set(tmp_path / "data", n=9, seed=12)
    stems = _spoil(data_yaml)
    caplog.set_level(logging.INFO, logger="accelyolo")
    done = fit(**_options(data_yaml, tmp_path / "runs"))
    text = caplog.text
    for split in ("train", "val"):
        line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith(f"data {split}:"))
        for words in (
            "10 images found",
            "1 corrupt skipped",
            "1 label missing",
            "1 empty label",
            "2 rows dropped",
            "1 class >= nc",
            "1 duplicate",
            "1 clipped",
        ):
            assert words in line, (words, line)
    assert "data_report.json" in text
    report = json.loads((done.run_dir / "data_report.json").read_text())
    val = report["splits"]["val"]
    assert val["corrupt"] == 1 and val["missing_labels"] == 1 and val["empty_labels"] == 1
    assert val["rows_dropped"] == 2 and val["class_out_of_range"] == 1 and val["rows_clipped"] == 1
    assert val["duplicates_removed"] == 1
    by_file = {}
    for p in val["problems"]:
        by_file.setdefault(p["file"].rsplit("/", 1)[-1], []).append(p)
    assert any("not readable" in p["problem"] for p in by_file["900001.png"])
    assert by_file[f"{stems[2]}.txt"][0]["line"] == 2 and ">= nc" in by_file[f"{stems[2]}.txt"][0]["problem"]
    assert by_file[f"{stems[3]}.txt"][0]["line"] == 2 and "above 1" in by_file[f"{stems[3]}.txt"][0]["problem"]
    assert by_file[f"{stems[5]}.txt"][0]["line"] == 1 and "clipped" in by_file[f"{stems[5]}.txt"][0]["problem"]
    assert any("duplicate" in p["problem"] for p in by_file[f"{stems[4]}.txt"])
    assert any("missing label" in p["problem"] for p in by_file[f"{stems[0]}.png"])


class BreakImagesAtStart(Callback):
    """After the label cache was built: delete one image and truncate another (a network filesystem)."""

    def __init__(self, deleted, truncated):
        self.deleted, self.truncated = deleted, truncated

    def on_fit_start(self, trainer):
        self.deleted.unlink()
        data = self.truncated.read_bytes()
        self.truncated.write_bytes(data[: len(data) // 3])


def test_images_unreadable_during_training_are_replaced_named_and_counted(tmp_path, caplog):
    import logging

    data_yaml, truth = write_shapes_set(tmp_path / "data", n=8, seed=13)
    files = sorted(truth)
    folder = tmp_path / "data" / "images" / "val"
    deleted, truncated = folder / "000002.png", folder / "000005.png"
    assert str(deleted) in files and str(truncated) in files
    caplog.set_level(logging.INFO, logger="accelyolo")
    done = fit(
        callbacks=[BreakImagesAtStart(deleted, truncated)],
        **_options(data_yaml, tmp_path / "runs", max_steps_per_epoch=0, rect_val=False),
    )
    assert done.epochs_completed == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for path in (deleted, truncated):
        assert any(str(path) in w and "unreadable" in w for w in warnings), warnings
    summary = [w for w in warnings if w.startswith("epoch 1:")]
    assert len(summary) == 1 and "2 images unreadable" in summary[0], warnings
    assert str(deleted) in summary[0] and str(truncated) in summary[0]


def test_unreadable_image_flags_reach_the_main_process_from_workers(tmp_path):
    import torch

    from accelyolo.data import YoloDataset, build_dataloader

    data_yaml, truth = write_shapes_set(tmp_path / "data", n=6, seed=14)
    ds = YoloDataset(sorted(truth), imgsz=64, augment=False, names=NAMES, buffer_mb=0)
    gone = ds.im_files[3]
    (tmp_path / "data" / "images" / "val" / gone.rsplit("/", 1)[-1]).unlink()
    item = ds[3]
    assert item["path"] == ds.im_files[4]  # the next image stands in
    assert ds.unreadable_files() == [gone]
    ds2 = YoloDataset(sorted(truth)[:3] + [sorted(truth)[4]], imgsz=64, augment=True, names=NAMES, buffer_mb=0)
    loader = build_dataloader(ds2, batch_size=2, workers=1, shuffle=False)
    Path(ds2.im_files[0]).unlink()
    batches = list(loader)
    assert sum(len(b["paths"]) for b in batches) == 4 and torch.is_tensor(batches[0]["images"])
    assert ds2.unreadable_files() == [ds2.im_files[0]]


def test_an_unreadable_image_in_a_rect_batch_is_replaced_at_the_batch_shape(tmp_path):
    from accelyolo.data import YoloDataset, build_dataloader

    data_yaml, truth = write_shapes_set(tmp_path / "data", n=7, seed=15)  # 7 sizes, 7 aspect ratios
    ds = YoloDataset(sorted(truth), imgsz=96, augment=False, names=NAMES, rect=True, batch_size=2, buffer_mb=0)
    shapes = [tuple(int(v) for v in s) for s in ds.batch_shapes]
    b = next(k for k in range(len(shapes) - 1) if shapes[k] != shapes[k + 1])
    Path(ds.im_files[2 * b + 1]).unlink()  # the last of batch b: the next image has another batch shape
    batches = list(build_dataloader(ds, batch_size=2, workers=0, shuffle=False))
    assert tuple(batches[b]["images"].shape[2:]) == shapes[b]
    assert batches[b]["paths"][1] == ds.im_files[2 * b + 2] and ds.unreadable_files() == [ds.im_files[2 * b + 1]]
