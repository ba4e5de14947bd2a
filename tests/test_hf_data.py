"""Issue 23: Hugging Face `datasets` as training data, against the same set in YOLO txt.

The real set is `cards` (../shared/datasets, its val split), written by the test as a `DatasetDict` with
`save_to_disk` (images embedded as bytes, `objects.category` a ClassLabel, COCO boxes) and as an
imagefolder with `metadata.jsonl` (images as files, Pascal VOC boxes, names from a data.yaml).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from accelyolo.core.errors import DataError
from accelyolo.data import YoloDataset, build_dataloader, load_data_yaml
from tests.conftest import SHARED

datasets = pytest.importorskip("datasets")

CARDS = SHARED / "datasets" / "cards"


def rows_of(image_dir, label_dir, voc: bool = False) -> list[dict]:
    """One row per image: its pixel boxes (COCO xywh, or VOC corners) from the YOLO labels."""
    rows = []
    for n, image in enumerate(sorted(image_dir.glob("*.jpg"))):
        with Image.open(image) as im:
            w, h = im.size
        boxes, classes = [], []
        label = label_dir / f"{image.stem}.txt"
        for line in label.read_text().splitlines() if label.is_file() else []:
            cls, cx, cy, bw, bh = (float(v) for v in line.split())
            x, y = (cx - bw / 2) * w, (cy - bh / 2) * h
            boxes.append([x, y, x + bw * w, y + bh * h] if voc else [x, y, bw * w, bh * h])
            classes.append(int(cls))
        rows.append({"image": image, "image_id": 500 + n, "width": w, "height": h,
                     "objects": {"bbox": boxes, "category": classes}})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    if not (CARDS / "images" / "val").is_dir():
        pytest.skip(f"the cards set is not at {CARDS}")
    root = tmp_path_factory.mktemp("hfcards")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ACCELYOLO_HOME", str(root / "home"))  # where embedded images are written
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", root / "hf-cache")  # load_dataset's cache, not ~/.cache
        for part in ("images", "labels"):
            shutil.copytree(CARDS / part / "val", root / part / "val")
        names = yaml.safe_load((CARDS / "data.yaml").read_text())["names"]
        (root / "data.yaml").write_text(yaml.safe_dump({"train": "images/val", "val": "images/val", "names": names}))
        image_dir, label_dir = root / "images" / "val", root / "labels" / "val"
        features = datasets.Features({
            "image": datasets.Image(), "image_id": datasets.Value("int64"),
            "width": datasets.Value("int32"), "height": datasets.Value("int32"),
            "objects": {"bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
                        "category": datasets.List(datasets.ClassLabel(names=names))},
        })  # fmt: skip
        rows = rows_of(image_dir, label_dir)
        columns = {key: [str(r[key]) if key == "image" else r[key] for r in rows] for key in rows[0]}
        ds = datasets.Dataset.from_dict(columns, features=features)
        datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(root / "saved"))
        folder = root / "imagefolder" / "train"
        folder.mkdir(parents=True)
        with open(folder / "metadata.jsonl", "w") as f:
            for r in rows_of(image_dir, label_dir, voc=True):
                shutil.copy(r["image"], folder / r["image"].name)
                f.write(json.dumps({"file_name": r["image"].name, "objects": r["objects"]}) + "\n")
        split = {"dataset": "imagefolder", "split": "train", "bbox_format": "pascal_voc"}
        (root / "voc.yaml").write_text(yaml.safe_dump({"train": split, "val": split, "names": names}))
        yield {"root": root, "yolo": root / "data.yaml", "saved": root / "saved", "voc": root / "voc.yaml",
               "names": names}  # fmt: skip


def test_a_saved_dataset_dict_and_an_imagefolder_give_the_yolo_images_and_boxes(cards):
    yolo_spec = load_data_yaml(cards["yolo"])
    yolo = YoloDataset(yolo_spec.splits["val"], imgsz=128, names=yolo_spec.names)
    for kind in ("saved", "voc"):
        spec = load_data_yaml(cards[kind])
        assert spec.names == cards["names"]
        ds = YoloDataset(spec.splits["val"], imgsz=128, names=spec.names)
        assert len(ds) == len(yolo) == 67 and ds.report["boxes"] == yolo.report["boxes"] == 143
        assert ds.report["problems"] == []
        for a, b in zip(ds.labels, yolo.labels, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_array_equal(ds.shapes, yolo.shapes)


def test_the_first_training_batch_is_the_same(cards):
    batches = []
    for kind in ("yolo", "saved"):
        spec = load_data_yaml(cards[kind])
        ds = YoloDataset(spec.splits["train"], imgsz=128, augment=True, names=spec.names, seed=3)
        batches.append(next(iter(build_dataloader(ds, batch_size=8, workers=0, shuffle=True, seed=3))))
    a, b = batches
    assert torch.equal(a["images"], b["images"])
    torch.testing.assert_close(a["targets"], b["targets"], atol=1e-5, rtol=0)


def test_embedded_images_are_files_once_and_ids_come_from_the_dataset(cards):
    spec = load_data_yaml(cards["saved"])
    files = spec.splits["train"]
    assert all(f.is_file() and "hf" in f.parts for f in files)
    again = load_data_yaml(cards["saved"]).splits["train"]
    assert [f.stat().st_mtime_ns for f in again] == [f.stat().st_mtime_ns for f in files]  # not rewritten
    index = files[0].parent / "files.json"
    assert json.loads(index.read_text()) == [str(f) for f in files]  # a later load reads no image bytes
    ids = files.source.image_ids()
    assert [ids[str(f)] for f in files][:3] == [500, 501, 502]


def test_bad_boxes_and_a_missing_classlabel_are_reported(cards, tmp_path):
    names = cards["names"]
    image = sorted((cards["root"] / "images" / "val").glob("*.jpg"))[0]
    features = datasets.Features({
        "image": datasets.Image(),
        "objects": {"bbox": datasets.List(datasets.List(datasets.Value("float32"))),
                    "category": datasets.List(datasets.ClassLabel(names=names))},
    })  # fmt: skip
    objects = {"bbox": [[10, 10, 0, 5], [10, 10, 30, 30], [1, 2, 3]], "category": [0, 1, 2]}
    ds = datasets.Dataset.from_dict({"image": [str(image)], "objects": [objects]}, features=features)
    ds.save_to_disk(str(tmp_path / "bad"))
    spec = load_data_yaml(tmp_path / "bad")
    report = YoloDataset(spec.splits["train"], imgsz=64, names=spec.names).report
    assert report["boxes"] == 1 and report["rows_dropped"] == 2
    texts = [p["problem"] for p in report["problems"]]
    assert any("row 0 object 0: zero or negative size" in t for t in texts)
    assert any("row 0 object 2: bbox must be 4 finite numbers" in t for t in texts)
    plain = datasets.Dataset.from_dict({"image": [str(image)], "objects": [{"bbox": [[1, 1, 5, 5]], "category": [0]}]})
    plain.save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(DataError, match="objects.category is not a ClassLabel"):
        load_data_yaml(tmp_path / "plain")
    no_objects = datasets.Dataset.from_dict({"image": [str(image)]})
    no_objects.save_to_disk(str(tmp_path / "none"))
    with pytest.raises(DataError, match="column 'objects' missing"):
        load_data_yaml(tmp_path / "none")


def test_without_datasets_the_message_says_what_to_install(cards, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ImportError, match=r"pip install 'accelyolo\[hf\]'"):
        load_data_yaml(cards["saved"])


def test_a_model_trained_on_the_saved_dataset_scores_the_same_on_every_format(cards, tmp_path, one_thread):
    from accelyolo import fit
    from accelyolo.commands.validate import validate
    from tests.conftest import tiny_train_options

    result = fit(**tiny_train_options(cards["saved"], tmp_path, epochs=1, max_steps_per_epoch=2, batch_size=4))
    scores = []
    for data in (cards["yolo"], cards["saved"], cards["voc"]):
        out = validate(str(result.last_checkpoint), data=str(data), imgsz=64, plots=False, workers=0,
                       project=str(tmp_path / "val"), name=data.name, verbose=False)  # fmt: skip
        scores.append((out.metrics["mAP50"], out.metrics["mAP50-95"]))
    assert scores[1] == pytest.approx(scores[0], abs=1e-6)
    assert scores[2] == pytest.approx(scores[0], abs=1e-6)


def test_data_check_reads_a_dataset_folder(cards, capsys):
    from accelyolo.commands.cli import main

    assert main(["data", "check", str(cards["saved"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["names"] == cards["names"]
    assert report["splits"]["train"]["boxes"] == report["splits"]["val"]["boxes"] == 143


def test_parquet_files_and_crowd_objects(cards, tmp_path):
    """A folder of parquet files (load_dataset's parquet builder, images embedded) with an `iscrowd` object."""
    names = cards["names"]
    images = sorted((cards["root"] / "images" / "val").glob("*.jpg"))[:3]
    features = datasets.Features({
        "image": datasets.Image(),
        "objects": {"bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
                    "category": datasets.List(datasets.ClassLabel(names=names)),
                    "iscrowd": datasets.List(datasets.Value("int8"))},
    })  # fmt: skip
    objects = [{"bbox": [[5, 5, 40, 30], [60, 60, 80, 90]], "category": [1, 4], "iscrowd": [0, 1]}] * 3
    ds = datasets.Dataset.from_dict({"image": [str(p) for p in images], "objects": objects}, features=features)
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "train.parquet"))
    spec = load_data_yaml(tmp_path / "pq")
    assert spec.names == names and len(spec.splits["train"]) == 3
    data = YoloDataset(spec.splits["train"], imgsz=64, names=spec.names)
    assert data.report["boxes"] == 3 and data.report["crowd_regions"] == 3
    np.testing.assert_allclose(data.crowd_regions(data.im_files[0]), [[4, 60, 60, 140, 150]], atol=1e-4)


def test_one_model_scores_the_same_on_the_three_spellings(cards, tmp_path, monkeypatch):
    """The same answers (an oracle's, `tests.test_coco_data`) on YOLO txt, the saved dataset and the
    imagefolder with Pascal VOC boxes: the same mAP."""
    from tests.test_coco_data import validate_with_oracle

    scores = [
        validate_with_oracle(monkeypatch, cards[kind], cards["names"], tmp_path, name=kind).metrics
        for kind in ("yolo", "saved", "voc")
    ]
    assert 0.2 < scores[0]["mAP50-95"] < 0.95
    for other in scores[1:]:
        assert other["mAP50"] == pytest.approx(scores[0]["mAP50"], abs=1e-6)
        assert other["mAP50-95"] == pytest.approx(scores[0]["mAP50-95"], abs=1e-6)
