"""YOLOv5's training options (issue 12): each test shows the option changes what the loader, the model or
the run does: image weights, rect training, disk cache, sync BN, autoanchor off, nosave, the bbox-safe
crop and a user's albumentations pipeline."""

from __future__ import annotations

import os
import types
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from accelyolo.commands.fit import fit
from accelyolo.core.config import ConfigError, load_config
from accelyolo.data import YoloDataset
from accelyolo.data.checks import load_rgb
from accelyolo.data.loader import ImageWeightSampler, class_maps
from accelyolo.data.transforms import build_train_transform, letterbox
from accelyolo.families.anchor_based import COCO_ANCHORS
from accelyolo.training.callbacks import Callback
from accelyolo.training.experiment import convert_sync_batchnorm
from accelyolo.weights.checkpoint import load_checkpoint_bundle, read_checkpoint_metadata
from tests.conftest import TINY_ANCHOR_BASED, tiny_train_options

pytestmark = pytest.mark.usefixtures("one_thread")

# augmentation hyperparameters that make the train pipeline the identity (for pixel-exact checks)
IDENTITY = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, degrees=0.0, translate=0.0, scale=0.0, shear=0.0,
                perspective=0.0, flipud=0.0, fliplr=0.0, mosaic=0.0, mixup=0.0)  # fmt: skip


def make_dataset(root: Path, sizes: list[tuple[int, int]], classes: list[int]) -> list[Path]:
    """PNG images of the given (w, h) with one centred box of the given class each; returns the images."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = []
    for k, ((w, h), c) in enumerate(zip(sizes, classes)):
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        pixels[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (255, 0, 0) if c == 0 else (0, 0, 255)
        path = root / "images" / f"im{k:03d}.png"
        Image.fromarray(pixels).save(path)
        (root / "labels" / f"im{k:03d}.txt").write_text(f"{c} 0.5 0.5 0.5 0.5\n")
        files.append(path)
    return files


def write_data_yaml(root: Path, nc: int = 2) -> Path:
    names = "".join(f"  - c{i}\n" for i in range(nc))
    (root / "data.yaml").write_text(f"path: .\ntrain: images\nval: images\nnc: {nc}\nnames:\n{names}")
    return root / "data.yaml"


class Batches(Callback):
    """Records each epoch's batch paths and image shapes."""

    def __init__(self):
        self.paths: dict[int, list[str]] = {}
        self.shapes: list[tuple[int, ...]] = []
        self.weights_at_epoch_end: dict[int, list[str]] = {}

    def on_epoch_start(self, trainer, epoch):
        self.epoch = epoch

    def on_step_end(self, trainer, step):
        self.paths.setdefault(self.epoch, []).extend(trainer.last_batch["paths"])
        self.shapes.append(tuple(trainer.last_batch["images"].shape))

    def on_epoch_end(self, trainer, row):
        self.weights_at_epoch_end[row["epoch"]] = sorted(p.name for p in trainer.weights_dir.iterdir())


# ------------------------------------------------------------------------------------ image weights


def test_image_weights_follow_label_frequency_and_per_class_map(tmp_path):
    files = make_dataset(tmp_path, [(32, 32)] * 12, [0] * 10 + [1] * 2)
    dataset = YoloDataset(files, imgsz=32, names=["a", "b"])
    sampler = ImageWeightSampler(dataset, seed=3)
    w = sampler.image_weights
    assert w[11] / w[0] == pytest.approx(5.0)  # class 1 is 5x rarer: its images 5x likelier
    draws = np.concatenate([(sampler.set_epoch(e), sampler.indices())[1] for e in range(40)])
    share_rare = np.isin(draws, [10, 11]).mean()
    assert 0.4 < share_rare < 0.6  # 2 images x 5 vs 10 images x 1: half of all draws
    sampler.set_epoch(1)
    first = sampler.indices()
    assert np.array_equal(first, sampler.indices())  # f(seed, epoch, weights)
    sampler.set_epoch(2)
    assert not np.array_equal(first, sampler.indices())
    sampler.set_class_maps([0.0, 1.0])  # class 1 perfectly detected: its images are no longer drawn
    assert not np.isin(sampler.indices(), [10, 11]).any()
    result = types.SimpleNamespace(classes=np.array([1]), ap=np.array([0.25]))
    assert class_maps(result, 2).tolist() == [0.0, 0.25]
    with pytest.raises(ValueError, match="expected 2 per-class mAPs"):
        sampler.set_class_maps([0.5])


def test_image_weights_in_a_run_draw_by_weight_and_resume_draws_the_same(tmp_path):
    files = make_dataset(tmp_path / "data", [(32, 32)] * 16, [0] * 12 + [1] * 4)
    data = write_data_yaml(tmp_path / "data")
    options = tiny_train_options(data, tmp_path / "runs", imgsz=32, epochs=3, image_weights=True)
    full = Batches()
    fit(callbacks=[full], **options)
    names = {p.name for p in files}
    for paths in full.paths.values():
        assert len(paths) == 16 and {Path(p).name for p in paths} <= names
        assert len(set(paths)) < 16  # drawn with replacement, not a permutation
    meta = read_checkpoint_metadata(tmp_path / "runs" / "exp" / "weights" / "last.safetensors")
    assert len(meta["class_maps"]) == 2  # the per-class mAPs the next draw would use

    part = Batches()
    fit(callbacks=[part], **{**options, "name": "part", "epochs": 2})
    resumed = Batches()
    fit(callbacks=[resumed], resume=str(tmp_path / "runs" / "part" / "weights" / "last.safetensors"), epochs=3)
    assert resumed.paths[3] == full.paths[3]  # mAPs restored from the checkpoint: the same draw


# ------------------------------------------------------------------------------------ rect training


def test_rect_training_uses_sorted_rectangular_batches_without_mosaic(tmp_path):
    sizes = [(64, 32)] * 8 + [(32, 64)] * 8
    make_dataset(tmp_path / "data", sizes, [0, 1] * 8)
    data = write_data_yaml(tmp_path / "data")
    options = tiny_train_options(data, tmp_path / "runs", epochs=1, mosaic=1.0)
    square, rect = Batches(), Batches()
    fit(callbacks=[square], **options)
    fit(callbacks=[rect], **{**options, "name": "rect", "rect": True})
    assert {s[2:] for s in square.shapes} == {(64, 64)}
    assert sorted({s[2:] for s in rect.shapes}) == [(32, 64), (64, 32)]  # wide batch, then tall batch
    assert rect.paths[1] == sorted(rect.paths[1], key=lambda p: int(Path(p).stem[2:]) >= 8)  # by aspect, fixed
    with pytest.raises(ConfigError, match="'rect' and 'image_weights'"):
        load_config(rect=True, image_weights=True)


# ------------------------------------------------------------------------------------ disk cache


def test_disk_cache_writes_npy_reuses_it_and_invalidates_on_change(tmp_path):
    files = make_dataset(tmp_path / "data", [(48, 32)] * 3, [0, 1, 0])
    first = YoloDataset(files, imgsz=32, names=["a", "b"], cache="disk")
    npys = sorted((tmp_path / "data" / "images").glob("*.npy"))
    assert len(npys) == 3
    arr = np.load(npys[0], allow_pickle=False)  # plain arrays: no pickle needed
    assert arr.dtype == np.uint8 and arr.shape == (21, 32, 3)
    assert np.array_equal(first.load_image(0), load_rgb(files[0], 32, fast=False))
    mtimes = [p.stat().st_mtime_ns for p in npys]
    # a second run reads the .npy, not the image: prove it by planting a marker in the cached array
    marked = arr.copy()
    marked[0, 0] = (1, 2, 3)
    np.save(npys[0], marked, allow_pickle=False)
    second = YoloDataset(files, imgsz=32, names=["a", "b"], cache="disk")
    assert second.load_image(0)[0, 0].tolist() == [1, 2, 3]
    assert [p.stat().st_mtime_ns for p in npys[1:]] == mtimes[1:]
    # a changed image gets a new cache file, the stale one is never read
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(files[0])
    os.utime(files[0], ns=(1, 1))
    third = YoloDataset(files, imgsz=32, names=["a", "b"], cache="disk")
    assert third.load_image(0).max() == 0
    assert len(list((tmp_path / "data" / "images").glob("im000.*.npy"))) == 2


def test_disk_cache_falls_back_when_the_image_folder_is_read_only(tmp_path):
    files = make_dataset(tmp_path / "data", [(32, 32)] * 2, [0, 1])
    images = tmp_path / "data" / "images"
    YoloDataset(files, imgsz=32, names=["a", "b"])  # label cache written first, while writable
    images.chmod(0o555)
    try:
        dataset = YoloDataset(files, imgsz=32, names=["a", "b"], cache="disk", cache_dir=tmp_path / "fallback")
        assert not list(images.glob("*.npy"))
        assert len(list((tmp_path / "fallback").glob("images-*/*.npy"))) == 2
        assert np.array_equal(dataset.load_image(1), load_rgb(files[1], 32, fast=False))
    finally:
        images.chmod(0o755)


# ------------------------------------------------------------------------------------ sync BN, autoanchor, nosave


def test_sync_bn_converts_every_batchnorm_and_is_refused_where_it_cannot_run():
    from accelyolo.families import build_model

    model = build_model(TINY_ANCHOR_BASED, nc=2)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    gpu_ranks = types.SimpleNamespace(num_processes=2, device=torch.device("cuda", 0))
    converted = convert_sync_batchnorm(model, gpu_ranks)
    assert n_bn > 0 and sum(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules()) == n_bn
    with pytest.raises(ConfigError, match="this run has one"):
        convert_sync_batchnorm(model, types.SimpleNamespace(num_processes=1, device=torch.device("cpu")))
    with pytest.raises(ConfigError, match="needs GPU processes"):
        convert_sync_batchnorm(model, types.SimpleNamespace(num_processes=2, device=torch.device("cpu")))


def test_sync_bn_on_one_process_stops_the_run(tiny_demo, tmp_path):
    with pytest.raises(ConfigError, match="sync_bn"):
        fit(**tiny_train_options(tiny_demo, tmp_path, epochs=1, sync_bn=True))


def test_noautoanchor_keeps_the_coco_anchors(tiny_demo, tmp_path):
    def anchors(**extra):
        result = fit(**tiny_train_options(tiny_demo, tmp_path, model=TINY_ANCHOR_BASED, epochs=1, anchor_t=1.5,
                                          max_steps_per_epoch=1, **extra))  # fmt: skip
        return load_checkpoint_bundle(result.last_checkpoint).model_state["head.anchors"]

    coco = torch.tensor(COCO_ANCHORS, dtype=torch.float32)
    assert not torch.equal(anchors(name="auto"), coco)  # anchor_t 1.5: COCO anchors fit few boxes: refit
    assert torch.equal(anchors(name="kept", noautoanchor=True), coco)


def test_anchors_from_the_recipe_build_the_head_and_survive_the_checkpoint(tiny_demo, tmp_path):
    from accelyolo.weights.checkpoint import load_checkpoint

    own = [[4, 5, 8, 10, 12, 8], [16, 30, 30, 16, 24, 24], [40, 40, 60, 30, 30, 60]]  # YOLOv5 style, flat
    recipe = tmp_path / "anchors.yaml"
    recipe.write_text(f"model: {TINY_ANCHOR_BASED}\nanchors: {own}\n")
    assert load_config(recipe).anchors == own
    options = tiny_train_options(tiny_demo, tmp_path, model=TINY_ANCHOR_BASED, epochs=1, max_steps_per_epoch=1)
    result = fit(recipe=str(recipe), noautoanchor=True, **{k: v for k, v in options.items() if k != "model"})
    expected = torch.tensor(own, dtype=torch.float32).view(3, 3, 2)
    assert torch.equal(load_checkpoint_bundle(result.last_checkpoint).model_state["head.anchors"], expected)
    model, _ = load_checkpoint(str(result.inference_checkpoint))  # rebuilt from the saved build keywords
    assert torch.equal(model.head.anchors, expected)
    with pytest.raises(ConfigError, match="anchors"):
        fit(**{**options, "anchors": [[10, 13], [30, 61]]})  # two levels for a three-level head
    with pytest.raises(ConfigError, match="anchors"):
        fit(**{**options, "model": "yolov8t", "anchors": own})  # an anchor-free model has none


def test_nosave_writes_only_the_final_checkpoint(tiny_demo, tmp_path):
    saved, every = Batches(), Batches()
    fit(callbacks=[saved], **tiny_train_options(tiny_demo, tmp_path, epochs=2, nosave=True, max_steps_per_epoch=1))
    fit(callbacks=[every], **tiny_train_options(tiny_demo, tmp_path, name="all", epochs=2, max_steps_per_epoch=1))
    assert saved.weights_at_epoch_end[1] == []
    assert "last.safetensors" in every.weights_at_epoch_end[1]  # without --nosave: every epoch
    assert "last.safetensors" in saved.weights_at_epoch_end[2]
    meta = read_checkpoint_metadata(tmp_path / "exp" / "weights" / "last.safetensors")
    assert meta["epoch"] == 2


# ------------------------------------------------------------------------------------ crop and user pipeline


def test_bbox_safe_crop_enlarges_objects_and_keeps_every_box():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    boxes = np.array([[0.3, 0.3, 0.2, 0.2, 0], [0.6, 0.5, 0.1, 0.2, 1]], np.float32)
    plain = build_train_transform(64, IDENTITY)
    cropped = build_train_transform(64, {**IDENTITY, "crop": 1.0})
    assert not any(isinstance(t, A.RandomSizedBBoxSafeCrop) for t in plain.transforms)
    out = plain(image=image, bboxes=boxes)
    assert np.array_equal(out["image"], image)
    grew = 0
    for seed in range(8):
        cropped.set_random_seed(seed)
        res = cropped(image=image, bboxes=boxes)
        b = np.asarray(res["bboxes"])
        assert res["image"].shape == (64, 64, 3) and len(b) == 2  # every box kept
        assert (b[:, 2:4] >= boxes[:, 2:4] - 1e-4).all()  # a crop resized back makes objects larger
        grew += bool((b[:, 2:4] > boxes[:, 2:4] + 1e-3).any())
    assert grew >= 6
    assert not any(isinstance(t, A.RandomSizedBBoxSafeCrop) for t in build_train_transform(
        64, {**IDENTITY, "crop": 1.0}, mosaic=True).transforms)  # fmt: skip


def test_a_saved_albumentations_pipeline_is_applied(tmp_path):
    pipeline = tmp_path / "invert.yaml"
    A.save(A.Compose([A.InvertImg(p=1.0)]), pipeline, data_format="yaml")
    files = make_dataset(tmp_path / "data", [(32, 32)] * 2, [0, 1])
    common = dict(imgsz=32, augment=True, hyp=IDENTITY, names=["a", "b"])
    plain = YoloDataset(files, **common)[0]
    inverted = YoloDataset(files, user_transform=pipeline, **common)[0]
    expected = letterbox(load_rgb(files[0], 32, fast=True), (32, 32))[0]
    assert np.array_equal(plain["image"], expected)
    assert np.array_equal(inverted["image"], 255 - expected)  # the user's transform ran
    assert np.array_equal(inverted["boxes"], plain["boxes"])
    # through the recipe key, with the file path in the messages when it is wrong
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(augment=str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("just: text\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        YoloDataset(files, user_transform=bad, **common)[0]
