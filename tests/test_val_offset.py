"""Issue 13 item 8: validation boxes land where pycocotools puts them, and training boxes on their pixels.

Root cause of the offset (see `accelyolo.evaluation.evaluators`): the validator compared predictions with the ground
truth in letterboxed pixels, where predictions are not clipped to the image and x and y carry slightly
different resize ratios, while predictions.json (and so COCOeval) sees them mapped back to the original
image and clipped to it. A box that sticks out of an image border has a higher IoU after clipping, so
mAP50-95 came out lower than pycocotools'; mAP50 hardly moves. Measured on this file's set at imgsz 320
(rect and square alike): letterboxed 0.5013, letterboxed with predictions clipped to the image 0.5358,
pycocotools 0.5358; the clipping is the whole gap, the unequal x/y ratios stay below 1e-4 here. The fix
computes the metrics in original-image pixels (`evaluation.to_original_pixels`), the space of COCOeval.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from tests.real_data_helpers import NAMES, ColourDetector, coco_eval, write_shapes_set


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return write_shapes_set(root, n=14, seed=3)


@pytest.mark.parametrize("imgsz", [320, 416])
@pytest.mark.parametrize("rect", [True, False])
def test_val_map_equals_pycocotools_on_its_predictions_json(shapes_set, tmp_path, monkeypatch, capsys, imgsz, rect):
    import accelyolo.weights.checkpoint

    val_cli = importlib.import_module("accelyolo.commands.validate")

    data_yaml, truth = shapes_set
    monkeypatch.setattr(
        accelyolo.weights.checkpoint,
        "load_checkpoint",
        lambda *a, **k: (ColourDetector(len(NAMES)), {"names": NAMES, "config": {}}),
    )
    argv = [
        "--weights",
        "colour.safetensors",
        "--data",
        str(data_yaml),
        "--imgsz",
        str(imgsz),
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--save-json",
        "--no-plots",
        "--project",
        str(tmp_path),
        "--name",
        "val",
    ]
    assert val_cli.main(argv + ([] if rect else ["--no-rect"])) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    printed = dict(kv.split("=") for kv in line.split())
    map50, map5095 = coco_eval(truth, tmp_path / "val" / "predictions.json")
    assert 0.2 < map5095 < 0.95  # the detector's boxes make a non-trivial AP at the high thresholds
    assert float(printed["mAP50"]) == pytest.approx(map50, abs=1e-4)
    assert float(printed["mAP50-95"]) == pytest.approx(map5095, abs=1e-4)


def _pixel_boxes(sample) -> np.ndarray:
    h, w = sample["image"].shape[:2]
    b = sample["boxes"]  # (n, 4) normalized cx cy w h
    return np.stack(
        [
            (b[:, 0] - b[:, 2] / 2) * w,
            (b[:, 1] - b[:, 3] / 2) * h,
            (b[:, 0] + b[:, 2] / 2) * w,
            (b[:, 1] + b[:, 3] / 2) * h,
        ],
        1,
    )


def _drawn_extent(image: np.ndarray, colour) -> np.ndarray:
    """x1 y1 x2 y2 (pixel edges) of the pixels of `colour`, half-blended edge pixels counted."""
    close = (np.abs(image.astype(np.int16) - np.array(colour)) < 80).all(2)
    ys, xs = np.nonzero(close)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


@pytest.mark.parametrize("rect", [False, True])
@pytest.mark.parametrize("imgsz", [320, 416])
def test_training_samples_without_mosaic_keep_boxes_on_the_drawn_pixels(shapes_set, imgsz, rect):
    from accelyolo.data import YoloDataset
    from tests.real_data_helpers import COLOURS

    data_yaml, truth = shapes_set
    still = dict(
        degrees=0.0,
        translate=0.0,
        scale=0.0,
        shear=0.0,
        perspective=0.0,
        hsv_h=0.0,
        hsv_s=0.0,
        hsv_v=0.0,
        fliplr=0.5,
        flipud=0.0,
        mosaic=1.0,
        mixup=0.0,
    )
    ds = YoloDataset(sorted(truth), imgsz=imgsz, augment=True, hyp=still, names=NAMES, rect=rect, batch_size=4)
    ds.set_mosaic(False)  # as after close_mosaic
    checked = 0
    for epoch in (0, 1):  # flips differ per epoch
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            sample = ds[i]
            for box, cls in zip(_pixel_boxes(sample), sample["classes"]):
                drawn = _drawn_extent(sample["image"], COLOURS[int(cls)])
                assert np.abs(box - drawn).max() <= 1.0, (ds.im_files[i], box, drawn)
                checked += 1
    assert checked >= 20
