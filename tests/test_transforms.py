"""Augmentation keeps boxes true; letterbox/rect; determinism across workers; close mosaic; collate."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from accelyolo.data import YoloDataset, build_dataloader, collate_fn, to_model_input
from accelyolo.data.checks import img2label_path
from accelyolo.data.loader import BatchCollate
from accelyolo.data.transforms import (
    PAD_VALUE,
    BoxFollowingCompose,
    HsvGain,
    YoloMosaic,
    bbox_params,
    build_train_transform,
    letterbox,
    pixel_centre_map,
)

# flat, fully saturated colours; blends with black (background), with each other at edges or
# with the grey padding (114) never land within COLOUR_TOL of another one
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 255)]
COLOUR_TOL = 40
NO_HSV = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}


def rect_dataset(root: Path, n: int = 8, seed: int = 0) -> list[Path]:
    """Images (64x64 and 64x48) of black with 2-3 non-touching flat rectangles, class = colour."""
    rng = np.random.default_rng(seed)
    images = []
    for k in range(n):
        h, w = (64, 64) if k % 2 else (48, 64)
        img = np.zeros((h, w, 3), np.uint8)
        rows, taken = [], np.zeros((h, w), bool)
        for c in rng.choice(len(COLOURS), size=3, replace=False):
            bw, bh = (int(v) for v in rng.integers(12, 22, 2))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            if taken[max(y - 3, 0) : y + bh + 3, max(x - 3, 0) : x + bw + 3].any():
                continue
            taken[y : y + bh, x : x + bw] = True
            img[y : y + bh, x : x + bw] = COLOURS[c]
            rows.append(f"{c} {(x + bw / 2) / w} {(y + bh / 2) / h} {bw / w} {bh / h}\n")
        p = root / "images" / f"{k}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
        lp = img2label_path(p)
        lp.parent.mkdir(parents=True, exist_ok=True)
        lp.write_text("".join(rows))
        images.append(p)
    return images


def assert_boxes_true(item: dict, tol: int = 2, leftover: int = 60) -> None:
    """Every box encloses its colour within `tol` px, and no colour is left without its box."""
    img = item["image"].astype(int)
    h, w = img.shape[:2]
    xyxy = np.concatenate(
        [item["boxes"][:, :2] - item["boxes"][:, 2:] / 2, item["boxes"][:, :2] + item["boxes"][:, 2:] / 2], 1
    )
    xyxy = xyxy * [w, h, w, h]
    for c, colour in enumerate(COLOURS):
        mask = (np.abs(img - colour) < COLOUR_TOL).all(2)
        covered = np.zeros_like(mask)
        for (x1, y1, x2, y2), cls in zip(xyxy, item["classes"]):
            if cls != c:
                continue
            inside = mask[max(int(y1), 0) : int(np.ceil(y2)), max(int(x1), 0) : int(np.ceil(x2))]
            assert inside.any(), f"box of class {c} holds none of its colour"
            ys, xs = np.nonzero(inside)
            ox, oy = max(int(x1), 0), max(int(y1), 0)
            # tight: the colour reaches within tol px of every edge of its box
            assert xs.min() + ox <= x1 + tol and xs.max() + ox + 1 >= x2 - tol, (c, x1, x2)
            assert ys.min() + oy <= y1 + tol and ys.max() + oy + 1 >= y2 - tol, (c, y1, y2)
            covered[
                max(int(np.floor(y1)) - tol, 0) : int(np.ceil(y2)) + tol,
                max(int(np.floor(x1)) - tol, 0) : int(np.ceil(x2)) + tol,
            ] = True
        # pixels of a colour outside all its boxes: only remnants of boxes dropped by the rules
        assert (mask & ~covered).sum() <= leftover, f"colour {c}: {(mask & ~covered).sum()} px without a box"


@pytest.mark.parametrize("mosaic,backend", [(1.0, "fast"), (1.0, "albumentations"), (0.0, "fast")])
def test_boxes_stay_true_through_augmentation(tmp_path: Path, mosaic: float, backend: str):
    images = rect_dataset(tmp_path)
    hyp = {**NO_HSV, "mosaic": mosaic, "flipud": 0.5, "fliplr": 0.5, "scale": 0.5, "translate": 0.1}
    ds = YoloDataset(images, imgsz=64, augment=True, hyp=hyp, names=[str(c) for c in range(7)], mosaic_backend=backend)
    n_boxes = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape == (64, 64, 3)
            assert ((item["boxes"] >= 0) & (item["boxes"] <= 1)).all()
            assert_boxes_true(item)
            n_boxes += len(item["boxes"])
    assert n_boxes > 3 * len(ds)  # boxes survive, the test is not vacuous


def test_mixup_keeps_boxes_of_both_samples(tmp_path: Path):
    images = rect_dataset(tmp_path)
    ds = YoloDataset(images, imgsz=64, augment=True, hyp={**NO_HSV, "mixup": 1.0}, names=list("abcdefg"))
    solo = YoloDataset(images, imgsz=64, augment=True, hyp={**NO_HSV, "mixup": 0.0}, names=list("abcdefg"))
    more = sum(len(ds[i]["boxes"]) > len(solo[i]["boxes"]) for i in range(len(ds)))
    assert more >= len(ds) // 2
    # the blend has pixel values of neither flat colour nor black
    assert any(len(np.unique(ds[i]["image"].reshape(-1, 3), axis=0)) > 12 for i in range(len(ds)))


def test_val_letterbox_and_ratio_pad(tmp_path: Path):
    images = rect_dataset(tmp_path, n=2)  # image 0 is 64 wide, 48 high
    ds = YoloDataset(images, imgsz=128, names=list("abcdefg"))
    item = ds[0]
    assert item["image"].shape == (128, 128, 3) and item["orig_shape"] == (48, 64)
    (ry, rx), (pad_w, pad_h) = item["ratio_pad"]
    assert (ry, rx, pad_w, pad_h) == (2.0, 2.0, 0, 16)
    assert (item["image"][:16] == 114).all() and (item["image"][-16:] == 114).all()
    assert_boxes_true(item)
    # boxes mapped back with ratio_pad land on the original label
    label = np.loadtxt(img2label_path(images[0]), ndmin=2)
    cx = (item["boxes"][:, 0] * 128 - pad_w) / rx / 64
    cy = (item["boxes"][:, 1] * 128 - pad_h) / ry / 48
    np.testing.assert_allclose(np.stack([cx, cy], 1), label[:, 1:3], atol=1e-5)


def test_rect_batches_are_stride_multiples_and_sorted(tmp_path: Path):
    images = rect_dataset(tmp_path, n=6)
    ds = YoloDataset(images, imgsz=64, names=list("abcdefg"), rect=True, batch_size=2, stride=32)
    assert (ds.batch_shapes % 32 == 0).all()
    ar = ds.shapes[:, 0] / ds.shapes[:, 1]
    assert (np.diff(ar) >= 0).all()
    dl = build_dataloader(ds, batch_size=2, workers=0, shuffle=True)
    shapes = [tuple(b["images"].shape[2:]) for b in dl]
    assert shapes == [tuple(s) for s in ds.batch_shapes]
    assert shapes[0][0] < shapes[0][1]  # the 48-high images get a wide batch
    for i in range(len(ds)):
        assert_boxes_true(ds[i])


def test_letterbox_function():
    img = np.full((30, 60, 3), 7, np.uint8)
    out, ratio, pad = letterbox(img, (64, 64))
    assert out.shape == (64, 64, 3) and ratio == (32 / 30, 64 / 60) and pad == (0, 16)
    out, ratio, pad = letterbox(img, (64, 64), scaleup=False)
    assert ratio == (1.0, 1.0) and pad == (2, 17) and (out[17:47, 2:62] == 7).all()


def test_hsv_gain_is_seeded_and_changes_colour():
    img = np.full((8, 8, 3), (120, 80, 40), np.uint8)
    t = HsvGain(0.015, 0.7, 0.4, p=1.0)
    t.set_random_seed(1)
    a = t(image=img)["image"]
    t.set_random_seed(1)
    b = t(image=img)["image"]
    assert (a == b).all() and not (a == img).all()
    zero = HsvGain(0.0, 0.0, 0.0)(image=img)["image"]
    assert np.abs(zero.astype(int) - img).max() <= 2


def test_collate_shapes():
    items = [
        {"image": np.zeros((32, 64, 3), np.uint8), "boxes": np.array([[0.5, 0.5, 0.1, 0.2]], np.float32),
         "classes": np.array([3]), "path": "a", "orig_shape": (10, 20), "ratio_pad": ((1, 1), (0, 0))},
        {"image": np.ones((32, 64, 3), np.uint8), "boxes": np.zeros((0, 4), np.float32),
         "classes": np.zeros(0, np.int64), "path": "b", "orig_shape": (10, 20), "ratio_pad": ((1, 1), (0, 0))},
        {"image": np.ones((32, 64, 3), np.uint8), "boxes": np.full((2, 4), 0.25, np.float32),
         "classes": np.array([0, 1]), "path": "c", "orig_shape": (10, 20), "ratio_pad": ((1, 1), (0, 0))},
    ]  # fmt: skip
    batch = collate_fn(items)
    assert batch["images"].shape == (3, 3, 32, 64) and batch["images"].dtype == torch.uint8
    assert batch["targets"].shape == (3, 6) and batch["targets"].dtype == torch.float32
    assert batch["targets"][:, 0].tolist() == [0, 2, 2] and batch["targets"][:, 1].tolist() == [3, 0, 1]
    assert batch["paths"] == ["a", "b", "c"] and len(batch["ratio_pads"]) == 3


def test_collated_images_are_nhwc_in_memory_and_model_input_keeps_values():
    items = [{"image": np.full((8, 12, 3), k, np.uint8), "boxes": np.zeros((0, 4), np.float32),
              "classes": np.zeros(0, np.int64), "path": str(k), "orig_shape": (8, 12),
              "ratio_pad": ((1, 1), (0, 0))} for k in range(2)]  # fmt: skip
    images = collate_fn(items)["images"]
    assert images.shape == (2, 3, 8, 12) and images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images[1], torch.ones(3, 8, 12, dtype=torch.uint8))
    nhwc = to_model_input(images, channels_last=True)
    nchw = to_model_input(images, channels_last=False)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and nchw.is_contiguous()
    assert torch.equal(nhwc, nchw) and torch.equal(nchw, images.float() / 255)


class _Numbered(torch.utils.data.Dataset):
    """Item k: a 16x16 image filled with k (mod 256)."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, k: int) -> dict:
        return {"image": np.full((16, 16, 3), k % 256, np.uint8), "boxes": np.zeros((0, 4), np.float32),
                "classes": np.zeros(0, np.int64), "path": str(k), "orig_shape": (16, 16),
                "ratio_pad": ((1, 1), (0, 0))}  # fmt: skip


def test_worker_batches_reuse_their_shared_memory_only_once_released():
    """BatchCollate: a held batch (its tensor, a view, or only its `.numpy()` array) keeps its pixels while
    the workers go on; released batches free their slot."""
    collate = BatchCollate(workers=2, slots=2)
    dl = torch.utils.data.DataLoader(_Numbered(), batch_size=4, num_workers=2, collate_fn=collate,
                                     persistent_workers=True)  # fmt: skip
    held: list = []
    for epoch in range(3):
        for b, batch in enumerate(dl):
            assert batch["images"].is_contiguous(memory_format=torch.channels_last)
            first = int(batch["paths"][0])
            assert batch["images"][:, 0, 0, 0].tolist() == [first + j for j in range(4)]
            if epoch == 0:  # hold every batch of the first epoch, in the forms a user may keep
                held.append((first, [batch["images"], batch["images"][1:], batch["images"].numpy()][b % 3]))
        for first, pixels in held:  # later batches were stacked elsewhere: nothing held was overwritten
            values = torch.as_tensor(np.asarray(pixels))
            assert values[:, 0, 0, 0].tolist() == [first + j for j in range(4)][-len(values) :]
    assert collate.in_use.sum() > 0  # the held batches keep their slots
    held.clear()
    assert collate.in_use.sum() == 0  # ... until released
    items = [_Numbered()[3], _Numbered()[4]]
    assert torch.equal(collate(items)["images"], collate_fn(items)["images"])  # in the main process: plain


def _random_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    centre, size = rng.uniform(0.05, 0.95, (n, 2)), rng.uniform(0.01, 0.6, (n, 2))
    return np.concatenate([centre, size, rng.integers(0, 5, (n, 1))], 1).astype(np.float32)


@pytest.mark.parametrize("mosaic", [True, False])
@pytest.mark.parametrize("hyp", [{}, {"degrees": 15.0, "shear": 5.0, "translate": 0.4, "flipud": 0.5}])
def test_box_following_pipeline_equals_albumentations_bbox_processing(mosaic: bool, hyp: dict):
    """The fast path moves boxes as albumentations' own bbox processor would (same seed, same image)."""
    fast = build_train_transform(96, hyp, mosaic=mosaic)
    assert isinstance(fast, BoxFollowingCompose)
    reference = A.Compose(fast.transforms, bbox_params=bbox_params(), strict=False)
    rng = np.random.default_rng(0)
    moved = dropped = 0
    for seed in range(60):
        h = 96 if mosaic else int(rng.integers(30, 96))
        image = rng.integers(0, 255, (h, 96, 3), dtype=np.uint8)
        rows = _random_rows(rng, int(rng.integers(0, 9)))
        extra = {}
        if mosaic:
            extra["mosaic_metadata"] = [
                {"image": rng.integers(0, 255, (int(rng.integers(40, 96)), 96, 3), dtype=np.uint8),
                 "bboxes": _random_rows(rng, 3)} for _ in range(3)
            ]  # fmt: skip
        fast.set_random_seed(seed)
        got = fast(image=image, bboxes=rows, **extra)
        reference.set_random_seed(seed)
        want = reference(image=image, bboxes=rows, **extra)
        want_boxes = np.asarray(want["bboxes"], np.float32).reshape(-1, 5)
        assert np.array_equal(got["image"], want["image"])
        assert got["bboxes"].shape == want_boxes.shape, seed
        np.testing.assert_allclose(got["bboxes"], want_boxes, atol=1e-5)
        moved += len(want_boxes)
        dropped += len(rows) + 9 * mosaic - len(want_boxes)
    assert moved > 100 and dropped > 10  # both the moving and the dropping rules were exercised


def test_pipelines_with_other_steps_keep_albumentations_bbox_processing():
    assert isinstance(build_train_transform(64, {"perspective": 0.001}), A.Compose)
    assert isinstance(build_train_transform(64, {"crop": 1.0}), A.Compose)
    with pytest.raises(ValueError, match="Perspective"):
        BoxFollowingCompose([A.Perspective(p=1.0)])


def _items_by_path(dl) -> dict[str, tuple]:
    out = {}
    for batch in dl:
        t = batch["targets"]
        for b, path in enumerate(batch["paths"]):
            out[path] = (batch["images"][b].numpy().copy(), t[t[:, 0] == b, 1:].numpy().copy())
    return out


def test_same_seed_epoch_index_gives_same_item_in_workers(tmp_path: Path):
    images = rect_dataset(tmp_path)
    hyp = {"mosaic": 0.7, "mixup": 0.5, "degrees": 5.0, "shear": 2.0}
    ds = YoloDataset(images, imgsz=64, augment=True, hyp=hyp, names=list("abcdefg"), seed=7)
    dl = build_dataloader(ds, batch_size=3, workers=2, shuffle=True, seed=1)
    for epoch in (0, 1):  # set_epoch must reach the persistent workers
        ds.set_epoch(epoch)
        in_workers = _items_by_path(dl)
        assert len(in_workers) == len(ds)
        for i in range(len(ds)):
            item = ds[i]
            image, rows = in_workers[item["path"]]
            np.testing.assert_array_equal(image, item["image"].transpose(2, 0, 1))
            np.testing.assert_array_equal(rows[:, 0], item["classes"])
            np.testing.assert_allclose(rows[:, 1:], item["boxes"])
    ds.set_epoch(0)
    assert any(not np.array_equal(ds[i]["image"], in_workers[ds.im_files[i]][0].transpose(1, 2, 0))
               for i in range(len(ds)))  # epoch 1 differs from epoch 0  # fmt: skip


def flat_dataset(root: Path) -> list[Path]:
    """Eight 64x64 images, each one flat colour of its own, one full-image box."""
    images = []
    for k, colour in enumerate([(0, 0, 0), *COLOURS]):
        p = root / "images" / f"{k}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), colour).save(p)
        lp = img2label_path(p)
        lp.parent.mkdir(parents=True, exist_ok=True)
        lp.write_text("0 0.5 0.5 0.9 0.9\n")
        images.append(p)
    return images


def _colours_in(image: np.ndarray) -> int:
    """How many source colours (of black + COLOURS) cover >= 20 px of a CHW image."""
    img = image.transpose(1, 2, 0).astype(int)
    return sum((np.abs(img - c) < 20).all(2).sum() >= 20 for c in [(0, 0, 0), *COLOURS])


def test_close_mosaic_reaches_persistent_workers(tmp_path: Path):
    ds = YoloDataset(flat_dataset(tmp_path), imgsz=64, augment=True, hyp={**NO_HSV, "mosaic": 1.0},
                     names=["a"])  # fmt: skip
    dl = build_dataloader(ds, batch_size=4, workers=2, shuffle=True, seed=0)
    assert dl.persistent_workers
    first = [_colours_in(im) for b in dl for im in b["images"].numpy()]
    assert max(first) >= 2  # mosaics mix the flat images
    ds.set_mosaic(False)
    ds.set_epoch(1)
    second = [_colours_in(im) for b in dl for im in b["images"].numpy()]
    assert max(second) == 1 and len(second) == len(ds)
    ds.set_mosaic(True)
    assert max(_colours_in(im) for b in dl for im in b["images"].numpy()) >= 2


def test_a_pass_started_ahead_yields_the_same_batches(tmp_path: Path, monkeypatch):
    """`start_next_pass` on a prepared loader at its last batch: the next `iter()` returns that pass (no
    second start), with the batches a pass started at `iter()` gives; refused mid-pass, twice, and
    without persistent workers."""
    from accelyolo.data.loader import start_next_pass
    from accelyolo.training.trainer import fresh_accelerator

    ds = YoloDataset(flat_dataset(tmp_path), imgsz=64, augment=True, hyp={**NO_HSV, "mosaic": 1.0}, names=["a"])
    accelerator = fresh_accelerator(cpu=True)

    def epochs(workers: int, ahead: bool) -> tuple[list[np.ndarray], list[bool]]:
        dl = accelerator.prepare(build_dataloader(ds, batch_size=3, workers=workers, shuffle=True, seed=0))
        images, started = [], []
        for epoch in range(3):
            ds.set_epoch(epoch)
            dl.set_epoch(epoch)
            batches = iter(dl)
            for i, batch in enumerate(batches):
                images.append(batch["images"].numpy().copy())
                if ahead and i == 0:
                    started.append(start_next_pass(dl))  # mid-pass: refused
                if ahead and i == len(dl) - 1 and epoch < 2:
                    ds.set_epoch(epoch + 1)
                    dl.set_epoch(epoch + 1)
                    started += [start_next_pass(dl), start_next_pass(dl)]  # the second: already started
        return images, started

    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter as WorkersIter

    starts = []
    reset = WorkersIter._reset
    monkeypatch.setattr(WorkersIter, "_reset", lambda it, *a, **k: starts.append(1) or reset(it, *a, **k))
    plain, _ = epochs(2, ahead=False)
    assert len(starts) == 3
    ahead, started = epochs(2, ahead=True)
    assert started == [False, True, False, False, True, False, False]
    assert len(starts) == 6  # three passes started, none twice
    assert len(ahead) == len(plain) == 9
    for a, b in zip(ahead, plain):
        np.testing.assert_array_equal(a, b)
    in_process, refused = epochs(0, ahead=True)
    assert not any(refused)
    for a, b in zip(in_process, plain):
        np.testing.assert_array_equal(a, b)


def test_ram_cache_logs_size_and_changes_nothing(tmp_path: Path, caplog):
    images = rect_dataset(tmp_path, n=4)
    plain = YoloDataset(images, imgsz=64, augment=True, names=list("abcdefg"), buffer_mb=0)
    with caplog.at_level(logging.INFO, logger="accelyolo"):
        ram = YoloDataset(images, imgsz=64, augment=True, names=list("abcdefg"), cache="ram", verbose=True)
    messages = [r.getMessage() for r in caplog.records if r.name == "accelyolo.data.dataset"]
    assert any("caching 4 of 4 images in RAM" in m for m in messages)
    assert any(m.startswith("4 images, 0 backgrounds") for m in messages)  # the verbose split summary
    for i in range(4):
        np.testing.assert_array_equal(plain[i]["image"], ram[i]["image"])


def test_ram_cache_respects_its_byte_budget(tmp_path: Path, caplog):
    images = rect_dataset(tmp_path, n=8)  # 64x64 and 64x48 images: 12288 and 9216 bytes decoded at 64 px
    plain = YoloDataset(images, imgsz=64, augment=True, names=list("abcdefg"), buffer_mb=0)
    budget_mb = 40000 / 2**20  # holds the first 3 or 4 of them, not 8
    with caplog.at_level(logging.INFO, logger="accelyolo"):
        ram = YoloDataset(images, imgsz=64, augment=True, names=list("abcdefg"), cache="ram",
                          cache_budget_mb=budget_mb, buffer_mb=0)  # fmt: skip
    held = [img for img in ram._ram if img is not None]
    assert 0 < len(held) < len(images) and ram._ram[len(held)] is None  # filled in order until full
    assert ram.cache_bytes == sum(img.nbytes for img in held) <= 40000
    assert ram.cache_bytes + ram.shapes[len(held)].prod() * 3 > 40000  # the next image would not fit
    assert any(f"caching {len(held)} of 8 images in RAM" in r.getMessage() for r in caplog.records)
    for i in range(8):  # cached or decoded when used: the same items
        np.testing.assert_array_equal(plain[i]["image"], ram[i]["image"])
        np.testing.assert_array_equal(plain[i]["boxes"], ram[i]["boxes"])


def test_single_cls_and_bad_arguments(tmp_path: Path):
    images = rect_dataset(tmp_path, n=2)
    ds = YoloDataset(images, imgsz=64, names=list("abcdefg"), single_cls=True)
    assert all((lb[:, 0] == 0).all() for lb in ds.labels)
    with pytest.raises(ValueError, match="multiple of stride"):
        YoloDataset(images, imgsz=70)
    with pytest.raises(ValueError, match="cache"):
        YoloDataset(images, imgsz=64, cache="gpu")


def test_donor_pool_bounds_decodes_on_large_datasets(tmp_path: Path, monkeypatch):
    import accelyolo.data.dataset as dataset_module

    images = rect_dataset(tmp_path, n=48)
    decodes = []
    original = dataset_module.load_rgb
    monkeypatch.setattr(dataset_module, "load_rgb", lambda *a, **k: decodes.append(a[0]) or original(*a, **k))
    pool_mb = 2 * 16 * (64 * 64 * 9 // 4) / 2**20  # a buffer whose half holds 16 images
    ds = YoloDataset(images, imgsz=64, augment=True, hyp={"mosaic": 1.0}, names=list("abcdefg"), buffer_mb=pool_mb)
    pool = ds.donor_pool(0)
    assert pool is not None and len(pool) == 16 and not np.array_equal(pool, ds.donor_pool(1))
    ds.set_epoch(0)
    for i in range(len(ds)):
        ds[i]
    assert len(decodes) <= len(ds) + 16 + 8  # ~one decode per item, not four
    big = YoloDataset(images, imgsz=64, augment=True, names=list("abcdefg"))
    assert big.donor_pool(0) is None  # the whole dataset fits: donors from everywhere


def test_mosaic_zoomed_far_out_and_away_keeps_its_contract():
    """Scale down to 0.05 and translations that leave slivers of the canvas in view: every output is s x s,
    its boxes inside the image."""
    s = 64
    rng = np.random.default_rng(3)
    mosaic = YoloMosaic(s, scale=0.95, translate=0.9)
    for seed in range(300):
        tiles = [rng.integers(0, 255, (int(rng.integers(8, s + 1)), s, 3), dtype=np.uint8) for _ in range(4)]
        data = {"image": tiles[0], "mosaic_primary": _random_rows(rng, 3),
                "mosaic_metadata": [{"image": t, "bboxes": _random_rows(rng, 2)} for t in tiles[1:]]}  # fmt: skip
        mosaic.set_random_state(np.random.default_rng(0), random.Random(seed))
        got = mosaic.get_params_dependent_on_data({}, data)
        assert got["mosaic"].shape == (s, s, 3)
        assert ((got["mosaic_boxes"][:, :4] >= 0) & (got["mosaic_boxes"][:, :4] <= 1)).all()
    placed = [(rng.integers(0, 255, (s, s, 3), dtype=np.uint8), x, y) for x in (0, s) for y in (0, s)]
    for edge in (0.2, 0.5, 0.8):  # only the canvas' last column in view, at a scale that shrinks it to nothing
        sliver = np.array([[0.05, 0, edge - 0.1 * s], [0, 0.05, 10.0], [0, 0, 1]])
        image, applied = mosaic._resized_window(placed, sliver)
        assert image.shape == (s, s, 3) and applied.shape == (3, 3)


@pytest.mark.parametrize("scale", [0.5, 0.9, 0.0])
def test_axis_aligned_mosaic_is_the_warp_of_the_map_it_reports(scale: float):
    """Without rotation or shear YoloMosaic resizes the window of the canvas it sees instead of warping the
    whole canvas: its image is the canvas warped by the map it reports (to interpolation precision), and that
    map is the drawn one up to a translation of at most half an output pixel."""
    s = 96
    rng = np.random.default_rng(1)

    def smooth(h: int, w: int) -> np.ndarray:  # a smooth random image: coarse noise, bilinear upsampled
        coarse = rng.uniform(0, 255, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
        return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)

    mosaic = YoloMosaic(s, scale=scale, translate=0.2)
    warped = YoloMosaic(s, scale=scale, translate=0.2, degrees=1e-9)  # the canvas-warp path, same draws
    resized = 0
    for seed in range(40):
        tiles = [smooth(int(rng.integers(40, s + 1)), s) for _ in range(4)]
        donors = [{"image": t, "bboxes": np.zeros((0, 5), np.float32)} for t in tiles[1:]]
        data = {"image": tiles[0], "mosaic_primary": np.zeros((0, 5), np.float32), "mosaic_metadata": donors}
        mosaic.set_random_state(np.random.default_rng(0), random.Random(seed))
        got = mosaic.get_params_dependent_on_data({}, data)
        warped.set_random_state(np.random.default_rng(0), random.Random(seed))
        drawn = warped.get_params_dependent_on_data({}, data)["mosaic_matrix"]
        m = got["mosaic_matrix"]
        assert m[0, 1] == m[1, 0] == 0 and m[0, 0] == m[1, 1]
        assert abs(m[0, 0] - drawn[0, 0]) < 0.02 and np.abs(m[:2, 2] - drawn[:2, 2]).max() <= 0.5 + 0.02 * s
        resized += m[0, 0] != 1
        draw = random.Random(seed)  # the mosaic centre: the first two draws
        xc, yc = int(draw.uniform(0.5 * s, 1.5 * s)), int(draw.uniform(0.5 * s, 1.5 * s))
        placed = [(t, xc - t.shape[1] if k in (0, 2) else xc, yc - t.shape[0] if k in (0, 1) else yc)
                  for k, t in enumerate(tiles)]  # fmt: skip
        canvas = mosaic._canvas(placed, 0, 0, 2 * s, 2 * s)
        want = cv2.warpAffine(canvas, pixel_centre_map(m), (s, s), flags=cv2.INTER_LINEAR, borderValue=(PAD_VALUE,) * 3)
        diff = np.abs(got["mosaic"].astype(int) - want.astype(int))
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4, (seed, diff.mean(), np.percentile(diff, 99))
    assert resized > 30 if scale else resized == 0
