"""data.yaml parsing, per-file checks, the label cache, `accelyolo data check`, the demo data."""

from __future__ import annotations

import io
import json
import os
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from accelyolo.data import DataConfigError, YoloDataset, checks, generate_demo, load_data_yaml
from accelyolo.data import check as data_check
from accelyolo.data.cache import CACHE_VERSION
from accelyolo.data.checks import img2label_path, load_rgb, parse_label_rows, verify_image

COCO128 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco128"


def write_image(path: Path, size=(64, 48), colour=(200, 30, 30), mode="RGB", **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path, **save)
    return path


def write_label(image: Path, text: str) -> Path:
    p = img2label_path(image)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def write_yaml(root: Path, text: str) -> Path:
    p = root / "data.yaml"
    p.write_text(text)
    return p


def run_check(yaml_path: Path) -> tuple[int, dict]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = data_check.main([str(yaml_path), "--json"])
    return code, json.loads(buf.getvalue())


@pytest.fixture()
def bad_dataset(tmp_path: Path, monkeypatch) -> Path:
    """A train split with one file per problem the checks know; val has one good image."""
    monkeypatch.setenv("ACCELYOLO_HOME", str(tmp_path / "home"))
    img = tmp_path / "ds" / "images" / "train"
    good_row = "1 0.5 0.5 0.25 0.25\n"
    write_label(write_image(img / "good.png"), good_row)
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(jpeg, "JPEG")
    (img / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    write_label(img / "truncated.jpg", good_row)
    (img / "text.jpg").write_text("this is not an image")
    write_label(write_image(img / "tiny.png", size=(8, 8)), good_row)
    write_label(write_image(img / "columns.png"), "0 0.5 0.5 0.2\n0 0.5 0.5 0.2 0.2 1\n" + good_row)
    write_label(write_image(img / "negative.png"), "0 -0.1 0.5 0.2 0.2\n" + good_row)
    write_label(write_image(img / "above.png"), "0 0.5 0.5 1.0000005 0.2\n0 1.2 0.5 0.1 0.1\n")
    write_label(write_image(img / "class.png"), "5 0.5 0.5 0.2 0.2\n")
    write_label(write_image(img / "duplicate.png"), good_row * 2 + "0 0.2 0.2 0.1 0.1\n")
    write_label(write_image(img / "empty.png"), "")
    write_image(img / "missing.png")
    write_label(write_image(img / "zero.png"), "0 0.5 0.5 0 0.2\n" + good_row)
    write_label(write_image(tmp_path / "ds" / "images" / "val" / "v.png"), good_row)
    write_yaml(tmp_path / "ds", "path: .\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    return tmp_path / "ds" / "data.yaml"


def test_img2label_path_swaps_last_images_component():
    assert img2label_path("/d/images/x/images/train/a.jpg") == Path("/d/images/x/labels/train/a.txt")
    assert img2label_path("/d/pics/a.png") == Path("/d/pics/a.txt")


def test_every_check_is_counted_and_reported_with_its_file(bad_dataset: Path):
    code, result = run_check(bad_dataset)
    assert code == 0
    r = result["splits"]["train"]
    problems: dict[str, list[str]] = {}
    for p in r["problems"]:
        problems.setdefault(Path(p["file"]).stem, []).append(p["problem"])
    assert r["corrupt"] == 3 and r["images"] == 9
    for stem, word in [("truncated", "truncated"), ("text", "not readable"), ("tiny", "below 10 px")]:
        assert any(word in p.lower() for p in problems[stem]), (stem, problems.get(stem))
    assert sum("columns" in p for p in problems["columns"]) == 2
    assert any("negative" in p for p in problems["negative"])
    assert any("above 1" in p for p in problems["above"])
    assert any(">= nc=2" in p for p in problems["class"])
    assert any("1 duplicate rows removed" in p for p in problems["duplicate"])
    assert any("empty label" in p for p in problems["empty"])
    assert any("missing label" in p for p in problems["missing"])
    assert any("zero-area" in p for p in problems["zero"])
    assert "good" not in problems
    # good 1 + columns 1 + negative 1 + above 1 (clipped) + duplicate 2 + zero 1
    assert r["boxes"] == 7
    assert r["backgrounds"] == 3  # class (all rows dropped), empty, missing
    assert (r["missing_labels"], r["empty_labels"], r["duplicates_removed"]) == (1, 1, 1)
    assert r["rows_dropped"] == 6  # columns 2, negative, above, class, zero
    assert r["boxes_per_class"] == {"a": 2, "b": 5}


def test_bad_files_never_cost_a_good_image(bad_dataset: Path):
    spec = load_data_yaml(bad_dataset)
    ds = YoloDataset(spec.splits["train"], imgsz=64, names=spec.names)
    stems = sorted(Path(f).stem for f in ds.im_files)
    assert stems == sorted(["good", "columns", "negative", "above", "class", "duplicate", "empty", "missing", "zero"])
    above = ds.labels[[Path(f).stem for f in ds.im_files].index("above")]
    np.testing.assert_allclose(above, [[0, 0.5, 0.5, 1.0, 0.2]], atol=1e-6)  # clipped, kept
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (64, 64, 3) and item["image"].dtype == np.uint8


def test_parse_label_rows_clips_within_tolerance_only():
    rows, problems = parse_label_rows("0 0.5 0.5 1.0000009 0.5\n0 0.5 0.5 1.00001 0.5\n", nc=1)
    assert len(rows) == 1 and rows[0, 3] == pytest.approx(1.0)
    assert len(problems) == 1 and "above 1" in problems[0]


def test_split_without_usable_image_fails_the_check(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ACCELYOLO_HOME", str(tmp_path / "home"))
    write_label(write_image(tmp_path / "images" / "train" / "a.png"), "0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "images" / "val" / "broken.png").write_bytes(b"\x89PNG garbage")
    yaml_path = write_yaml(tmp_path, "train: images/train\nval: images/val\nnames: [a]\n")
    code, result = run_check(yaml_path)
    assert code == 1
    assert result["splits"]["val"]["images"] == 0 and result["splits"]["val"]["corrupt"] == 1
    assert result["splits"]["train"]["images"] == 1
    assert data_check.main([str(yaml_path)]) == 1  # the rich tables path


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_image_modes_load_as_rgb(tmp_path: Path, mode: str):
    p = tmp_path / f"im_{mode.replace(';', '')}.png"
    if mode == "I;16":
        Image.fromarray(np.full((48, 64), 1000, np.uint16)).save(p)
    else:
        write_image(p, size=(64, 48), colour=(90, 160, 30), mode=mode)
    img = load_rgb(p)
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    if mode in ("RGBA", "P"):
        assert abs(int(img[0, 0, 1]) - 160) <= 8
    if mode == "L":
        assert img[0, 0, 0] == img[0, 0, 1] == img[0, 0, 2]
    assert verify_image(p)[0] == (48, 64)


def test_exif_rotated_jpeg_loads_upright(tmp_path: Path):
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = (255, 0, 0)  # left half red, stored 80 wide x 40 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    p = tmp_path / "images" / "rot.jpg"
    p.parent.mkdir()
    Image.fromarray(arr).save(p, exif=exif, quality=95)
    assert verify_image(p)[0] == (80, 40)
    img = load_rgb(p)
    assert img.shape == (80, 40, 3)
    assert img[5, 20, 0] > 200 and img[75, 20, 0] < 60  # red ends up on top
    assert load_rgb(p, long_side=40).shape == (40, 20, 3)
    write_label(p, "0 0.5 0.25 0.5 0.5\n")
    ds = YoloDataset([p], imgsz=64, names=["a"])
    assert ds[0]["orig_shape"] == (80, 40)


def test_label_cache_hit_miss_rebuild(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ACCELYOLO_HOME", str(tmp_path / "home"))
    images = [write_image(tmp_path / "images" / f"{k}.png") for k in range(5)]
    for im in images:
        write_label(im, "0 0.5 0.5 0.2 0.2\n")
    reads = []
    original = checks.read_label_text
    monkeypatch.setattr(checks, "read_label_text", lambda p: reads.append(p) or original(p))
    first = YoloDataset(images, imgsz=64, names=["a", "b"])
    assert len(reads) == 5 and not first.report["cache_hit"]
    cache_file = Path(first.report["cache_file"])
    assert cache_file == tmp_path / "labels.accelyolo.json"  # beside the labels folder
    reads.clear()
    second = YoloDataset(images, imgsz=64, names=["a", "b"])
    assert reads == [] and second.report["cache_hit"]
    # a changed label file (size and mtime) rebuilds the cache
    label = img2label_path(images[2])
    label.write_text("1 0.5 0.5 0.3 0.3\n0 0.1 0.1 0.1 0.1\n")
    os.utime(label, ns=(time.time_ns() + 10**9,) * 2)
    third = YoloDataset(images, imgsz=64, names=["a", "b"])
    assert len(reads) == 5 and not third.report["cache_hit"] and third.report["boxes"] == 6
    # a different class count is another key
    reads.clear()
    YoloDataset(images, imgsz=64, names=["a"])
    assert len(reads) == 5
    assert json.loads(cache_file.read_text())["version"] == CACHE_VERSION  # plain JSON


def test_label_cache_falls_back_when_labels_folder_read_only(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ACCELYOLO_HOME", str(tmp_path / "home"))
    im = write_image(tmp_path / "ds" / "images" / "a.png")
    write_label(im, "0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "ds").chmod(0o555)
    try:
        ds = YoloDataset([im], imgsz=64, names=["a"], cache_dir=tmp_path / "fallback")
        assert Path(ds.report["cache_file"]).parent == tmp_path / "fallback"
        ds2 = YoloDataset([im], imgsz=64, names=["a"])
        assert Path(ds2.report["cache_file"]).parent == tmp_path / "home" / "cache"
    finally:
        (tmp_path / "ds").chmod(0o755)


def make_yaml_dataset(root: Path) -> None:
    for split in ("train", "val"):
        for k in range(2):
            write_label(write_image(root / "data" / "images" / split / f"{k}.png"), "0 0.5 0.5 0.2 0.2\n")


def test_data_yaml_variants(tmp_path: Path):
    make_yaml_dataset(tmp_path)
    (tmp_path / "data" / "train.txt").write_text("./images/train/0.png\nimages/train/1.png\n")
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    folder = write_yaml(cfg, "path: ../data\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    spec = load_data_yaml(folder)
    assert spec.root == (tmp_path / "data").resolve() and spec.names == ["a", "b"] and spec.nc == 2
    assert [p.name for p in spec.splits["train"]] == ["0.png", "1.png"]
    txt = write_yaml(cfg, "path: ../data\ntrain: train.txt\nval: [images/val, train.txt]\nnames: {0: x, 1: y}\n")
    spec = load_data_yaml(txt)
    assert spec.names == ["x", "y"] and len(spec.splits["train"]) == 2 and len(spec.splits["val"]) == 4
    assert all(p.is_file() for p in spec.splits["val"])
    no_names = write_yaml(cfg, "path: ../data\ntrain: images/train\nnc: 3\n")
    assert load_data_yaml(no_names).names == ["class0", "class1", "class2"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("train: images/train\nnc: 3\nnames: [a, b]\n", ["'nc'", "3", "2 entries"]),
        ("train: images/nope\nnames: [a]\n", ["'train'", "images/nope"]),
        ("train: images/train\nnames: {0: a, 2: b}\n", ["'names'", "without gaps"]),
        ("train: images/train\nnames: 7\n", ["'names'"]),
        ("path: 3\ntrain: images/train\nnames: [a]\n", ["'path'"]),
        ("- just a list\n", ["mapping"]),
        ("names: [a]\n", ["no split"]),
    ],
)
def test_data_yaml_errors_name_the_file_and_key(tmp_path: Path, text: str, words: list[str]):
    make_yaml_dataset(tmp_path)
    yaml_path = write_yaml(tmp_path / "data", text)
    with pytest.raises(DataConfigError) as err:
        load_data_yaml(yaml_path)
    msg = str(err.value)
    assert str(yaml_path) in msg
    for w in words:
        assert w in msg, msg


def test_demo_is_deterministic_exact_and_regenerated_on_change(tmp_path: Path):
    a = generate_demo(tmp_path / "a", n_train=6, n_val=2, imgsz=64, seed=3)
    b = generate_demo(tmp_path / "b", n_train=6, n_val=2, imgsz=64, seed=3)
    files_a = sorted(p.relative_to(a.parent) for p in a.parent.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b.parent) for p in b.parent.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a.parent / rel).read_bytes() == (b.parent / rel).read_bytes(), rel
    spec = load_data_yaml(a)
    assert spec.names == ["circle", "square", "triangle", "cross"] and len(spec.splits["train"]) == 6
    for image in spec.splits["train"]:
        img = load_rgb(image).astype(int)
        rows, problems = parse_label_rows(img2label_path(image).read_text(), nc=4)
        assert 1 <= len(rows) <= 5 and not problems
        for _, cx, cy, w, h in rows:  # exact boxes: the shape's colour reaches every box edge
            x1, y1 = round((cx - w / 2) * 64), round((cy - h / 2) * 64)
            x2, y2 = round((cx + w / 2) * 64), round((cy + h / 2) * 64)
            sat = img[y1:y2, x1:x2].max(2) - img[y1:y2, x1:x2].min(2)  # shapes are saturated
            assert sat[0].max() > 80 and sat[-1].max() > 80 and sat[:, 0].max() > 80 and sat[:, -1].max() > 80
    stamp = a.stat().st_mtime_ns
    assert generate_demo(tmp_path / "a", n_train=6, n_val=2, imgsz=64, seed=3) == a
    assert a.stat().st_mtime_ns == stamp  # not regenerated
    generate_demo(tmp_path / "a", n_train=4, n_val=2, imgsz=64, seed=3)
    assert len(load_data_yaml(a).splits["train"]) == 4  # marker changed -> regenerated


def test_demo_default_size(tmp_path: Path, monkeypatch):
    """The default demo set (its generation time is a benchmark's business, not a test's)."""
    from accelyolo.data import demo_data_yaml

    monkeypatch.setenv("ACCELYOLO_HOME", str(tmp_path))
    path = demo_data_yaml()
    assert path == tmp_path / "demo" / "data.yaml"
    spec = load_data_yaml(path)
    assert len(spec.splits["train"]) == 400 and len(spec.splits["val"]) == 100
    assert Image.open(spec.splits["val"][0]).size == (160, 160)


def test_coco128_counts_through_data_check(tmp_path: Path, monkeypatch):
    if not (COCO128 / "data.yaml").is_file():
        pytest.skip(f"coco128 not found at {COCO128}")
    monkeypatch.setenv("ACCELYOLO_HOME", str(tmp_path))
    code, result = run_check(COCO128 / "data.yaml")
    assert code == 0
    train, val = result["splits"]["train"], result["splits"]["val"]
    assert (train["images"], val["images"]) == (128, 128)
    assert (train["boxes"], val["boxes"]) == (929, 898)
    assert (train["backgrounds"], train["corrupt"], val["corrupt"]) == (2, 0, 0)
    assert train["boxes_per_class"]["person"] == 254
    assert not list(COCO128.glob("labels/*.accelyolo.json"))  # a read-only dataset is left alone
