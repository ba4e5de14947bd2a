"""Detection + semantic segmentation: the head, the mask data, the metrics, the joint training loop."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import accelyolo
from accelyolo.commands.fit import fit
from accelyolo.core.config import ConfigError
from accelyolo.data.segmentation import (
    SegmentationDataset,
    build_seg_transform,
    load_seg_spec,
    mask_path,
    seg_shape,
)
from accelyolo.data.spec import DataConfigError
from accelyolo.evaluation.segmetrics import confusion_matrix, segmentation_result
from accelyolo.families import build_loss, build_model
from accelyolo.tasks.multitask import MultiTaskLoss, MultiTaskResult, PairedLoader, seg_class_weights
from accelyolo.training.callbacks import Callback
from accelyolo.training.experiment import Experiment
from accelyolo.weights.checkpoint import read_checkpoint_metadata
from tests.conftest import TINY_ANCHOR_BASED, TINY_ANCHOR_FREE, tiny_train_options

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_multitask(tiny_demo):
    return tiny_demo.with_name("data-multitask.yaml")


# ------------------------------------------------------------------------------------------ model


@pytest.mark.parametrize("name", [TINY_ANCHOR_FREE, TINY_ANCHOR_BASED])
def test_a_model_without_the_head_is_the_plain_detector(name):
    """seg_classes=0 builds today's detector; the head is added after the detector, so the detector's
    weights (same seed) and its outputs are the same with or without the head."""
    torch.manual_seed(0)
    plain = build_model(name, nc=4).eval()
    torch.manual_seed(0)
    multi = build_model(name, nc=4, seg_classes=5).eval()
    assert "seg_classes" not in plain.config and not hasattr(plain, "seg_head")
    assert multi.config["seg_classes"] == 5
    plain_state, multi_state = plain.state_dict(), multi.state_dict()
    assert set(multi_state) - set(plain_state) == {k for k in multi_state if k.startswith("seg_head.")}
    for key, value in plain_state.items():
        assert torch.equal(value, multi_state[key]), key
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(plain(x), multi(x))
        det, logits = multi(x, x)
        assert torch.equal(det, plain(x)) and logits.shape == (2, 5, 64, 64)
        assert torch.equal(multi.segment(x), logits)  # the same layers on the same input
    with pytest.raises(ValueError, match="no segmentation head"):
        plain(x, x)


@pytest.mark.parametrize("name", [TINY_ANCHOR_FREE, TINY_ANCHOR_BASED])
def test_one_forward_call_trains_both_heads(name):
    """model(det, seg) in train mode: raw detection maps and (B, K, h, w) logits; every parameter gets a
    finite gradient from the summed multi-task loss."""
    model = build_model(name, nc=4, seg_classes=3).train()
    loss_fn = MultiTaskLoss(build_loss(model, imgsz=64), ignore=255)
    det_x, seg_x = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 32, 64)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.3], [1, 2, 0.3, 0.6, 0.2, 0.4]])
    masks = torch.randint(0, 3, (2, 32, 64))
    preds, logits = model(det_x, seg_x)
    assert logits.shape == (2, 3, 32, 64)
    total, items = loss_fn(preds, targets, logits, masks)
    assert loss_fn.names[-1] == "seg" and items.shape == (len(loss_fn.names),)
    total.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_the_loss_is_the_seed_weighted_sum():
    class FixedDet(torch.nn.Module):
        names = ("box", "cls")

        def forward(self, preds, targets):
            return torch.tensor(3.0), torch.tensor([1.0, 2.0])

    logits = torch.randn(4, 3, 8, 8)
    masks = torch.randint(0, 3, (4, 8, 8))
    masks[0, :2] = 255
    weights = seg_class_weights({"b": 2.0, 2: 0.5}, ["a", "b", "c"], "data.yaml")
    assert weights.tolist() == [1.0, 2.0, 0.5]
    loss = MultiTaskLoss(FixedDet(), ignore=255, det_gain=0.6, seg_gain=0.35, class_weights=weights)
    total, items = loss(None, None, logits, masks)
    ce = F.cross_entropy(logits, masks, weight=weights, ignore_index=255)
    assert torch.allclose(total, 0.6 * 3.0 + 0.35 * ce * 4)
    assert torch.allclose(items, torch.stack([torch.tensor(1.0), torch.tensor(2.0), ce]))
    total, _ = loss(None, None, logits, torch.full_like(masks, 255))  # all ignored: finite, no seg term
    assert torch.isfinite(total) and total.item() == pytest.approx(1.8)
    with pytest.raises(ConfigError, match="'seg_class_weights': 'd' is not a segmentation class"):
        seg_class_weights({"d": 1.0}, ["a", "b", "c"], "data.yaml")


# ------------------------------------------------------------------------------------------ metrics


def test_miou_equals_a_direct_confusion_matrix_computation():
    rng = np.random.default_rng(0)
    k, ignore = 4, 255
    target = rng.integers(0, k, (3, 20, 30))
    target[rng.random(target.shape) < 0.1] = ignore
    pred = np.where(
        rng.random(target.shape) < 0.6, np.where(target == ignore, 0, target), rng.integers(0, k, target.shape)
    )
    direct = np.zeros((k, k), np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t != ignore:
            direct[t, p] += 1
    got = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), k, ignore)
    assert np.array_equal(got.numpy(), direct)
    result = segmentation_result(got, ["a", "b", "c", "d"])
    ious = [direct[c, c] / (direct[c].sum() + direct[:, c].sum() - direct[c, c]) for c in range(k)]
    assert result.iou == pytest.approx(ious)
    assert result.miou == pytest.approx(np.mean(ious))
    assert result.pixel_accuracy == pytest.approx(np.trace(direct) / direct.sum())
    assert result.pixels == int((target != ignore).sum())


def test_miou_known_values_and_absent_classes():
    # truth: 2 px of class 0, 2 px of class 1; prediction gets one class-1 pixel wrong; class 2 absent
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 0, 1, 0]])
    result = segmentation_result(confusion_matrix(pred, target, 3, 255))
    assert result.iou[0] == pytest.approx(2 / 3) and result.iou[1] == pytest.approx(1 / 2)
    assert np.isnan(result.iou[2])  # absent from truth and prediction: left out of the mean
    assert result.miou == pytest.approx((2 / 3 + 1 / 2) / 2) and result.pixel_accuracy == pytest.approx(3 / 4)
    fitness = MultiTaskResult(_DetStub(0.2), result, result.miou, 0.5).as_dict()
    assert fitness["fitness"] == pytest.approx(0.5 * 0.2 + 0.5 * result.miou) and fitness["det_fitness"] == 0.2


class _DetStub:
    def __init__(self, fitness):
        self.fitness = fitness

    def as_dict(self):
        return {"precision": 0.0, "recall": 0.0, "mAP50": 0.0, "mAP50-95": 0.0, "fitness": self.fitness}


# ------------------------------------------------------------------------------------------ data


COLOURS = {1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255)}


def _squares(h=120, w=160):
    image = np.full((h, w, 3), 40, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for cls, (y, x) in zip(COLOURS, [(10, 10), (60, 40), (20, 100)]):
        image[y : y + 40, x : x + 40] = COLOURS[cls]
        mask[y : y + 40, x : x + 40] = cls
    return image, mask


def test_masks_stay_aligned_with_their_images_through_the_augmentation():
    """Coloured squares whose mask holds their class: after scale, crop, pad and flip, every mask pixel
    of class c lies on colour c (interpolation blurs only the edges), padding is 114 / ignore."""
    image, mask = _squares()
    hyp = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "fliplr": 0.5}
    shape = seg_shape(96, 0.5)
    assert shape == (64, 96)
    transform = build_seg_transform(96, shape, 255, hyp, scale=0.5)
    palette = {0: (40, 40, 40), **COLOURS}
    padded = 0
    kernel = np.ones((3, 3), np.uint8)
    for seed in range(40):
        transform.set_random_seed(seed)
        out = transform(image=image, mask=mask)
        img, m = out["image"], out["mask"]
        assert img.shape == (*shape, 3) and m.shape == shape
        for cls, colour in palette.items():
            sel = cv2.erode((m == cls).astype(np.uint8), kernel).astype(bool)  # interior: no edge blur
            if sel.sum() < 10:
                continue
            close = (np.abs(img[sel].astype(int) - colour).max(1) < 40).mean()
            assert close > 0.99, (seed, cls, close)
        pad = m == 255
        if pad.any():
            padded += 1
            assert (img[pad] == 114).all()
        assert set(np.unique(m)) <= {0, 1, 2, 3, 255}
    assert padded > 0  # the down-scales did pad


def _write_seg_set(root, masks):
    """Images under root/images/x, masks under root/masks/x; `masks` maps stem -> mask array or None."""
    (root / "images" / "x").mkdir(parents=True)
    (root / "masks" / "x").mkdir(parents=True)
    files = []
    for stem, mask in masks.items():
        image = root / "images" / "x" / f"{stem}.jpg"
        cv2.imwrite(str(image), np.full((32, 48, 3), 90, np.uint8))
        if mask is not None:
            cv2.imwrite(str(root / "masks" / "x" / f"{stem}.png"), mask)
        files.append(image)
    return files


def test_mask_checks_name_bad_files_and_skip_them(tmp_path):
    good = np.zeros((32, 48), np.uint8)
    good[5:10, 5:10] = 2
    good[0, 0] = 255  # the ignore value is allowed
    files = _write_seg_set(
        tmp_path,
        {
            "good": good,
            "small": np.zeros((16, 48), np.uint8),
            "badid": np.full((32, 48), 7, np.uint8),
            "colour": np.zeros((32, 48, 3), np.uint8),
            "missing": None,
        },
    )
    assert mask_path(files[0]) == tmp_path / "masks" / "x" / "good.png"
    ds = SegmentationDataset(files, ["a", "b", "c"], imgsz=64, augment=False)
    assert [f.name for f in ds.files] == ["good.jpg"]
    text = "\n".join(ds.problems)
    assert len(ds.problems) == 4
    assert "small.png: mask size 48x16 differs from its image 48x32" in text
    assert "badid.png: class ids [7] >= 3" in text
    assert "colour.png: mask must be single-channel" in text
    assert "missing.png: mask missing" in text
    # the dataset report names the same files
    from accelyolo.data.check import check_dataset
    from accelyolo.data.spec import load_data_yaml

    (tmp_path / "labels" / "x").mkdir(parents=True)
    data = tmp_path / "data.yaml"
    data.write_text(
        f"path: {tmp_path}\ntrain: images/x\nval: images/x\nnames: [o]\n"
        "seg_train: images/x\nseg_val: images/x\nseg_names: [a, b, c]\n"
    )
    report = check_dataset(load_data_yaml(data))["segmentation"]["seg_val"]
    assert report["images"] == 1 and sorted(p["file"] for p in report["problems"]) == sorted(
        str(tmp_path / "masks" / "x" / f"{stem}.png") for stem in ("small", "badid", "colour", "missing")
    )
    item = ds[0]
    assert item["image"].shape == (64, 64, 3) and item["mask"].shape == (64, 64)
    assert (item["mask"] == 2).sum() > 0 and (item["mask"] == 255).any()  # resized nearest; padded with ignore


def test_seg_keys_of_the_data_yaml(tmp_path, tiny_multitask):
    spec = load_seg_spec(tiny_multitask)
    assert spec.names == ["background", "circle", "square", "triangle", "cross"] and spec.ignore == 255
    assert len(spec.splits["seg_train"]) == 48 and len(spec.splits["seg_val"]) == 16
    assert load_seg_spec(tiny_multitask.with_name("data.yaml")) is None
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"path: {tiny_multitask.parent}\ntrain: images/train\nval: images/val\nnames: [a]\n"
        "seg_train: images/train\nseg_val: images/val\n"
    )
    with pytest.raises(DataConfigError, match=r"bad.yaml: 'seg_train' is set but 'seg_names' is missing"):
        load_seg_spec(bad)
    bad.write_text(bad.read_text() + "seg_names: [a, b]\nseg_ignore: 1\n")
    with pytest.raises(DataConfigError, match="key 'seg_ignore' = 1 is a class id"):
        load_seg_spec(bad)


def test_demo_masks_are_the_exact_shapes(tiny_multitask):
    """Every labelled shape appears in the mask as class + 1 inside its box; nothing outside the boxes."""
    root = tiny_multitask.parent
    for image in sorted((root / "images" / "val").glob("*.png"))[:8]:
        mask = cv2.imread(str(mask_path(image)), cv2.IMREAD_UNCHANGED)
        rows = np.loadtxt(root / "labels" / "val" / f"{image.stem}.txt", ndmin=2)
        inside = np.zeros_like(mask, bool)
        for cls, cx, cy, w, h in rows:
            s = mask.shape[0]
            x1, y1 = round((cx - w / 2) * s), round((cy - h / 2) * s)
            x2, y2 = round((cx + w / 2) * s), round((cy + h / 2) * s)
            inside[y1:y2, x1:x2] = True
            ys, xs = np.nonzero(mask[y1:y2, x1:x2] == cls + 1)
            assert len(ys) and ys.min() == 0 and xs.min() == 0 and ys.max() == y2 - y1 - 1 and xs.max() == x2 - x1 - 1
        assert (mask[~inside] == 0).all()


def test_the_shorter_loader_sets_the_epoch_length():
    class Epochs:
        def __init__(self):
            self.epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

    det = [{"images": i, "targets": i} for i in range(5)]
    seg = [{"images": -i, "masks": i} for i in range(3)]
    dataset = Epochs()
    paired = PairedLoader(det, seg, dataset)
    assert len(paired) == 3
    batches = list(paired)
    assert [b["images"] for b in batches] == [0, 1, 2] and [b["seg_images"] for b in batches] == [0, -1, -2]
    paired.set_epoch(4)
    assert dataset.epoch == 4


# ------------------------------------------------------------------------------------------ training


class RecordSteps(Callback):
    def __init__(self, stop_after_epoch=None):
        self.steps, self.stop_after_epoch = [], stop_after_epoch

    def on_step_end(self, trainer, step):
        self.steps.append((step.epoch, step.batch, step.losses, step.lrs))

    def on_epoch_end(self, trainer, row):
        if row["epoch"] == self.stop_after_epoch:
            trainer.request_stop()


def test_multitask_fit_writes_seg_columns_and_a_rebuildable_bundle(tiny_multitask, tmp_path):
    record = RecordSteps()
    result = fit(callbacks=[record], **tiny_train_options(tiny_multitask, tmp_path, segment=True, epochs=2))
    assert set(record.steps[0][2]) == {"box", "cls", "dfl", "seg"}
    assert len(record.steps) == 12  # 48 det and 48 seg images, batch 8: 6 paired steps an epoch
    rows = list(csv.DictReader((result.run_dir / "results.csv").open()))
    assert {"train/seg_loss", "metrics/pixel_accuracy", "metrics/mIoU", "metrics/mAP50"} <= set(rows[0])
    assert 0.0 <= float(rows[-1]["metrics/mIoU"]) <= 1.0
    assert float(rows[-1]["fitness"]) == pytest.approx(
        0.5 * (0.1 * float(rows[-1]["metrics/mAP50"]) + 0.9 * float(rows[-1]["metrics/mAP50-95"]))
        + 0.5 * float(rows[-1]["metrics/mIoU"]),
        abs=1e-5,
    )
    meta = read_checkpoint_metadata(result.last_checkpoint)
    assert meta["seg_names"] == ["background", "circle", "square", "triangle", "cross"] and meta["seg_ignore"] == 255
    assert meta["model"]["seg_classes"] == 5
    model, meta = accelyolo.load_checkpoint(str(result.inference_checkpoint))
    assert model.segment(torch.rand(1, 3, 64, 64)).shape == (1, 5, 64, 64)

    # predict: a class-id mask per image at its original size, the colour mask and the id PNG written
    from accelyolo.commands.predict import predict
    from accelyolo.commands.validate import validate

    images = tiny_multitask.parent / "images" / "val"
    found = predict(
        str(result.inference_checkpoint),
        str(images),
        save=True,
        save_masks=True,
        project=str(tmp_path / "predict"),
        conf_thres=0.01,
    )
    assert len(found) == 16 and all(f.mask is not None and f.mask.shape == (64, 64) for f in found)
    out = tmp_path / "predict" / "exp"
    first = sorted(images.glob("*.png"))[0].stem
    colour = cv2.imread(str(out / f"{first}_mask.png"))
    ids = cv2.imread(str(out / f"{first}_classes.png"), cv2.IMREAD_UNCHANGED)
    assert colour.shape == (64, 64, 3) and ids.shape == (64, 64) and ids.max() < 5
    assert np.array_equal(ids, found[0].mask)

    # val: mAP and the segmentation metrics of the seg_val split, equal to the trainer's last measurement
    val = validate(
        str(result.last_checkpoint),
        data=str(tiny_multitask),
        workers=0,
        rect_val=False,
        plots=False,
        project=str(tmp_path / "val"),
    )
    assert val.metrics["mIoU"] == pytest.approx(float(rows[-1]["metrics/mIoU"]), abs=1e-4)
    assert val.metrics["pixel_accuracy"] == pytest.approx(float(rows[-1]["metrics/pixel_accuracy"]), abs=1e-4)


@pytest.mark.slow
def test_multitask_resume_is_exact(tiny_multitask, tmp_path):
    """Stopped after epoch 1 and resumed, a multi-task run takes the losses and LRs of one never stopped."""
    opts = tiny_train_options(
        tiny_multitask,
        tmp_path,
        segment=True,
        epochs=2,
        batch_size=4,
        max_steps_per_epoch=5,
        warmup_epochs=1.0,
        warmup_min_iters=3,
    )
    straight = RecordSteps()
    fit(callbacks=[straight], **{**opts, "name": "straight"})
    first = RecordSteps(stop_after_epoch=1)
    stopped = fit(callbacks=[first], **{**opts, "name": "stopped"})
    second = RecordSteps()
    fit(callbacks=[second], resume=str(stopped.last_checkpoint))
    assert len(straight.steps) == 10
    assert first.steps + second.steps == straight.steps


def test_segment_needs_seg_data_and_checks_its_options(tiny_demo, tmp_path):
    with pytest.raises(ConfigError, match="has no 'seg_train'"):
        fit(**tiny_train_options(tiny_demo, tmp_path, segment=True, epochs=1))
    with pytest.raises(ConfigError, match="'det_weight' must lie in"):
        fit(**tiny_train_options(tiny_demo, tmp_path, segment=True, det_weight=1.5))
    with pytest.raises(ConfigError, match="'seg_class_weights': the weight of 'x'"):
        fit(**tiny_train_options(tiny_demo, tmp_path, segment=True, seg_class_weights={"x": -1}))


def test_segment_with_datasets_from_an_experiment_needs_their_segmentation_data(tiny_multitask, tmp_path):
    """Datasets a user's experiment builds with --segment must bring the segmentation data (a
    `MultiTaskData`); plain detection datasets get a message saying so, before any run folder exists."""
    from accelyolo.data import YoloDataset, load_data_yaml
    from accelyolo.training.records import RunData

    spec = load_data_yaml(tiny_multitask)
    common = dict(imgsz=64, names=list(spec.names), stride=32, seed=0, batch_size=8)
    datasets = (
        YoloDataset(spec.splits["train"], augment=False, hyp=None, **common),
        YoloDataset(spec.splits["val"], augment=False, hyp=None, **common),
    )

    class OwnData(Experiment):
        def build_datasets(self):
            return RunData(*datasets)

    refused = r"datasets an experiment builds otherwise must come as a MultiTaskData, got RunData"
    with pytest.raises(ConfigError, match=refused):
        fit(experiment=OwnData, **tiny_train_options(tiny_multitask, tmp_path, segment=True, epochs=1))
    assert not (tmp_path / "exp").exists()


@pytest.mark.slow
def test_ddp_multitask_epoch(tiny_multitask, tmp_path):
    """Two CPU processes train one multi-task epoch; mIoU is measured on all 16 val images once."""
    from tests.test_distributed import TRAIN, launch_args, run, train_flags

    proc = run(launch_args(2) + [TRAIN] + train_flags(tiny_multitask, tmp_path, "--epochs", "1", "--segment"))
    rows = list(csv.DictReader((tmp_path / "exp" / "results.csv").open()))
    assert rows[0]["train/seg_loss"] and rows[0]["metrics/mIoU"]
    assert "65536 pixels" in proc.stderr.replace("\n", " ")  # 16 images x 64 x 64, no repeats
    meta = read_checkpoint_metadata(tmp_path / "exp" / "weights" / "last.safetensors")
    assert meta["model"]["seg_classes"] == 5 and json.dumps(meta["seg_names"])


def test_miou_is_measured_every_interval_and_every_epoch_near_the_end():
    from accelyolo.core.config import load_config
    from accelyolo.tasks.multitask import MultiTaskEvaluator, MultiTaskExperiment

    cfg = load_config(segment=True, epochs=30, seg_val_interval=10)
    evaluator = MultiTaskEvaluator(None, None, None, ["a"], 255, cfg)
    assert [e for e in range(1, 31) if evaluator.seg_due(e)] == [10, 20, *range(21, 31)]
    skipped = MultiTaskResult(_DetStub(0.4), None, 0.7, 0.25).as_dict()  # not measured: the last mIoU counts
    assert np.isnan(skipped["pixel_accuracy"]) and skipped["fitness"] == pytest.approx(0.25 * 0.4 + 0.75 * 0.7)
    assert MultiTaskExperiment(cfg, accelerator=None).metric_columns(skipped)["metrics/mIoU"] is None


class RiggedClassMaps:
    """The run's evaluator, the per-class mAP50-95 of its detection part replaced by known values (0.1, 0.2, ...)."""

    def __init__(self, inner, nc):
        self.inner, self.nc = inner, nc

    def set_epoch(self, epoch):
        self.inner.set_epoch(epoch)

    def evaluate(self, model):
        result = self.inner.evaluate(model)
        result.detection.classes, result.detection.ap = np.arange(self.nc), np.arange(1, self.nc + 1) / 10.0
        return result


class RiggedExperiment(Experiment):
    def build_evaluator(self, loaders, data, names):
        return RiggedClassMaps(super().build_evaluator(loaders, data, names), len(names))


def test_segment_with_image_weights_draws_from_the_validated_class_maps(tiny_multitask, tmp_path):
    """The multi-task validation goes through the detection trainer's, which hands the per-class mAPs to the
    image-weight sampler (it once evaluated on its own and the weights never changed)."""
    options = tiny_train_options(tiny_multitask, tmp_path, segment=True, image_weights=True, epochs=1)
    result = fit(experiment=RiggedExperiment, **options)
    maps = read_checkpoint_metadata(result.last_checkpoint)["class_maps"]
    assert maps == pytest.approx([(i + 1) / 10.0 for i in range(len(maps))])
