"""Issue 23: COCO JSON read where it lies, as a split of a data.yaml or alone.

The real set is `cards` (../shared/datasets, its val split) written as a COCO file by the test itself
(not by `data convert`), with non-contiguous category ids, non-contiguous image ids, one crowd region
and one annotation of an unknown category.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from accelyolo.core.errors import DataError
from accelyolo.data import YoloDataset, build_dataloader, load_data_yaml
from accelyolo.data.check import check_dataset
from accelyolo.data.convert import convert
from accelyolo.data.spec import DataConfigError
from tests.conftest import SHARED

CARDS = SHARED / "datasets" / "cards"
CATEGORY_IDS = [3, 7, 11, 20, 21, 90]  # the six classes' ids in the COCO file: gaps, not starting at 0 or 1
BROKEN_ID = 99999  # the annotation whose category id is not among the categories
CROWD_ID = 88888


def yolo_to_coco(image_dir: Path, label_dir: Path, names: list[str]) -> dict:
    """A COCO dict of a YOLO split: pixel boxes from the normalized rows, image ids 1000, 1007, ..."""
    coco = {"images": [], "annotations": [], "categories": []}
    coco["categories"] = [{"id": cid, "name": n} for cid, n in reversed(list(zip(CATEGORY_IDS, names, strict=True)))]
    for n, image in enumerate(sorted(image_dir.glob("*.jpg"))):
        with Image.open(image) as im:
            w, h = im.size
        image_id = 1000 + 7 * n
        coco["images"].append({"id": image_id, "file_name": image.name, "width": w, "height": h})
        label = label_dir / f"{image.stem}.txt"
        for line in label.read_text().splitlines() if label.is_file() else []:
            cls, cx, cy, bw, bh = (float(v) for v in line.split())
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
            coco["annotations"].append(
                {"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[int(cls)],
                 "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
            )  # fmt: skip
    first, second = coco["images"][0], coco["images"][1]
    crowd = [2.0, 3.0, first["width"] / 3, first["height"] / 4]
    coco["annotations"].append(
        {"id": CROWD_ID, "image_id": first["id"], "category_id": CATEGORY_IDS[2], "bbox": crowd,
         "area": crowd[2] * crowd[3], "iscrowd": 1}
    )  # fmt: skip
    coco["annotations"].append(
        {"id": BROKEN_ID, "image_id": second["id"], "category_id": 5, "bbox": [1, 1, 20, 20], "area": 400, "iscrowd": 0}
    )
    return coco


@pytest.fixture(scope="module")
def cards(tmp_path_factory) -> dict:
    """cards' val split in a temporary folder as YOLO (`data.yaml`), as a COCO file beside the images
    (`images/val/instances_val.json`) and as a data.yaml with COCO splits (`coco.yaml`)."""
    if not (CARDS / "images" / "val").is_dir():
        pytest.skip(f"the cards set is not at {CARDS}")
    root = tmp_path_factory.mktemp("cards")
    for part in ("images", "labels"):
        shutil.copytree(CARDS / part / "val", root / part / "val")
    names = yaml.safe_load((CARDS / "data.yaml").read_text())["names"]
    (root / "data.yaml").write_text(
        yaml.safe_dump({"path": ".", "train": "images/val", "val": "images/val", "names": names})
    )
    coco = yolo_to_coco(root / "images" / "val", root / "labels" / "val", names)
    lone = root / "images" / "val" / "instances_val.json"
    lone.write_text(json.dumps(coco))
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    split = {"annotations": "annotations/instances_val.json", "images": "images/val"}
    (root / "coco.yaml").write_text(yaml.safe_dump({"path": ".", "train": split, "val": split}))
    return {"root": root, "yolo": root / "data.yaml", "json": lone, "yaml": root / "coco.yaml", "names": names,
            "coco": coco}  # fmt: skip


def test_a_coco_file_alone_is_a_dataset_with_its_categories(cards):
    spec = load_data_yaml(cards["json"])
    assert spec.names == cards["names"]  # sorted by category id, whatever order the file lists them in
    assert spec.category_ids == CATEGORY_IDS
    assert spec.splits["train"] == spec.splits["val"] == sorted((cards["root"] / "images" / "val").glob("*.jpg"))
    by_yaml = load_data_yaml(cards["yaml"])
    assert (by_yaml.names, by_yaml.category_ids) == (spec.names, spec.category_ids)
    assert by_yaml.splits["val"] == spec.splits["val"]


def test_the_three_spellings_give_the_same_images_and_boxes(cards):
    """YOLO txt, the COCO file alone and the data.yaml with COCO splits: same images, boxes and rows;
    the crowd region is kept out of the training rows, the unknown category dropped and reported."""
    datasets = {}
    for kind in ("yolo", "json", "yaml"):
        spec = load_data_yaml(cards[kind])
        datasets[kind] = YoloDataset(spec.splits["val"], imgsz=128, names=spec.names)
    yolo = datasets["yolo"]
    for kind in ("json", "yaml"):
        ds = datasets[kind]
        assert ds.im_files == yolo.im_files
        assert ds.report["boxes"] == yolo.report["boxes"] == 143
        for a, b in zip(ds.labels, yolo.labels, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
        assert ds.report["crowd_regions"] == 1 and ds.report["rows_dropped"] == 1
        assert ds.report["class_out_of_range"] == 1
        (problem,) = ds.report["problems"]
        assert problem["annotation"] == BROKEN_ID and f"annotation id {BROKEN_ID}" in problem["problem"]
        assert "category_id 5" in problem["problem"]
        crowd = ds.crowd_regions(ds.im_files[0])  # cls x1 y1 x2 y2 in original pixels
        w, h = Image.open(ds.im_files[0]).size
        np.testing.assert_allclose(crowd, [[2, 2, 3, 2 + w / 3, 3 + h / 4]], atol=1e-9)


def test_the_first_training_batch_is_the_same(cards):
    """Augmented (mosaic, affine, HSV, flips), at a fixed seed: the same pixels and boxes from both."""
    batches = []
    for kind in ("yolo", "json"):
        spec = load_data_yaml(cards[kind])
        ds = YoloDataset(spec.splits["train"], imgsz=128, augment=True, names=spec.names, seed=3)
        loader = build_dataloader(ds, batch_size=8, workers=0, shuffle=True, seed=3)
        batches.append(next(iter(loader)))
    a, b = batches
    assert torch.equal(a["images"], b["images"])
    assert a["targets"].shape == b["targets"].shape and a["targets"].shape[0] > 0
    torch.testing.assert_close(a["targets"], b["targets"], atol=1e-5, rtol=0)


def test_data_check_reports_bad_annotations_with_their_ids(tmp_path, cards):
    """Zero and negative sizes, boxes outside the image (dropped) or sticking out (clipped), unknown image
    and category ids, a malformed bbox and an image listed but missing: each named by its id."""
    src = cards["coco"]
    image = src["images"][0]
    w = image["width"]
    bad = [
        (1, [10, 10, 0, 5], "zero or negative size"),
        (2, [10, 10, 5, -3], "zero or negative size"),
        (3, [w + 5, 10, 20, 20], "lies outside"),
        (4, [w - 10, 10, 20, 20], "extends outside"),
        (5, [10, 10, "x", 20], "bbox must be 4 finite numbers"),
    ]
    coco = {
        "categories": src["categories"],
        "images": [dict(image, width=w + 1), {"id": 77, "file_name": "not_here.jpg", "width": 50, "height": 50}],
        "annotations": [
            *({"id": i, "image_id": image["id"], "category_id": 3, "bbox": box} for i, box, _ in bad),
            {"id": 6, "image_id": 12345, "category_id": 3, "bbox": [1, 1, 5, 5]},
            {"id": 7, "image_id": image["id"], "category_id": 4, "bbox": [1, 1, 5, 5]},
            {"id": 8, "image_id": 77, "category_id": 3, "bbox": [1, 1, 5, 5]},
        ],
    }
    path = cards["root"] / "images" / "val" / "bad.json"
    path.write_text(json.dumps(coco))
    try:
        report = check_dataset(load_data_yaml(path))["splits"]["val"]
    finally:
        path.unlink()
    problems = {p["annotation"]: p["problem"] for p in report["problems"] if p["annotation"] is not None}
    for i, _, words in bad:
        assert words in problems[i] and problems[i].startswith(f"annotation id {i}:")
    assert "image_id 12345 is not among" in problems[6] and "category_id 4" in problems[7]
    assert 8 not in problems  # its image is missing: reported once, with the image id
    size, missing = [p["problem"] for p in report["problems"] if p["annotation"] is None]
    assert "image id 77" in missing and "missing" in missing
    assert f"the file says {w + 1}x" in size and f"the image is {w}x" in size
    assert (report["images"], report["corrupt"], report["boxes"]) == (1, 1, 1)  # the clipped box is kept
    assert (report["rows_dropped"], report["rows_clipped"], report["class_out_of_range"]) == (6, 1, 1)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "not a readable JSON file"),
        ('{"images": [], "annotations": []}', "key 'categories' missing"),
        ('{"images": [], "annotations": [], "categories": [{"id": "a", "name": "x"}]}', "categories[0] needs"),
        ('{"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "x"}]}', "images[0] needs"),
        ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]}', "lists no image"),
    ],
)
def test_an_unusable_coco_file_is_one_message_naming_it(tmp_path, content, words):
    path = tmp_path / "instances.json"
    path.write_text(content)
    with pytest.raises((DataError, DataConfigError), match=re.escape(words)) as err:
        load_data_yaml(path)
    assert str(path) in str(err.value)


def test_a_coco_split_with_images_elsewhere_says_where_it_looked(cards, tmp_path):
    data = tmp_path / "data.yaml"
    annotations = cards["root"] / "annotations" / "instances_val.json"
    data.write_text(
        yaml.safe_dump({"train": {"annotations": str(annotations)}, "val": {"annotations": str(annotations)}})
    )
    with pytest.raises(DataConfigError, match=r"none of the 67 images .* set 'train.images'"):
        load_data_yaml(data)
    data.write_text(yaml.safe_dump({"train": {"annotations": str(annotations), "pictures": "x"}}))
    with pytest.raises(DataConfigError, match=r"key 'train' as a mapping .*unknown key\(s\) \['pictures'\]"):
        load_data_yaml(data)
    names = cards["names"][::-1]
    data.write_text(
        yaml.safe_dump(
            {
                "names": names,
                "train": {"annotations": str(annotations), "images": str(cards["root"] / "images" / "val")},
            }
        )
    )
    with pytest.raises(DataConfigError, match="key 'names'.*differs from the categories"):
        load_data_yaml(data)


def test_yolo_to_coco_to_yolo_is_lossless(cards, tmp_path):
    coco_out, yolo_out = tmp_path / "coco", tmp_path / "yolo"
    first = convert(cards["yolo"], "coco", coco_out)
    assert first["splits"]["train"] == {"images": 67, "boxes": 143, "crowd": 0, "skipped_images": 0}
    written = json.loads((coco_out / "annotations" / "instances_train.json").read_text())
    assert [c["id"] for c in written["categories"]] == [1, 2, 3, 4, 5, 6]
    convert(coco_out / "data.yaml", "yolo", yolo_out)
    spec = load_data_yaml(yolo_out / "data.yaml")
    assert spec.names == cards["names"]
    for image in sorted((cards["root"] / "images" / "val").glob("*.jpg")):
        before = np.loadtxt(cards["root"] / "labels" / "val" / f"{image.stem}.txt", ndmin=2).reshape(-1, 5)
        after = np.loadtxt(yolo_out / "labels" / "train" / f"{image.stem}.txt", ndmin=2).reshape(-1, 5)
        np.testing.assert_allclose(after, before, atol=1e-6, rtol=0)
    with pytest.raises(DataError, match="not empty"):
        convert(cards["yolo"], "coco", coco_out)


def test_coco_to_yolo_keeps_ids_out_and_leaves_crowds_out(cards, tmp_path):
    """COCO -> COCO keeps the file's category and image ids and its crowd region; -> YOLO has no crowd."""
    out = convert(cards["json"], "coco", tmp_path / "coco")
    again = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())
    assert sorted(c["id"] for c in again["categories"]) == CATEGORY_IDS
    assert [i["id"] for i in again["images"]] == [i["id"] for i in cards["coco"]["images"]]
    assert [a["iscrowd"] for a in again["annotations"]].count(1) == 1
    assert out["splits"]["train"]["boxes"] == 143
    yolo = convert(cards["json"], "yolo", tmp_path / "yolo")
    assert yolo["splits"]["train"]["crowd"] == 1
    assert load_data_yaml(tmp_path / "yolo" / "data.yaml").names == cards["names"]


# ----------------------------------------------------------------------- validation against pycocotools


class Oracle(torch.nn.Module):
    """A detector that answers each batch from its labels (jittered, with random scores), adds a box
    inside every crowd region and a few false positives: AP is neither 0 nor 1, and the crowd rule
    changes it. `batch` is set by the loader wrapper before each forward."""

    def __init__(self, nc: int, dataset_of) -> None:
        super().__init__()
        self.nc, self.dataset_of, self.batch = nc, dataset_of, None
        self.rng = np.random.default_rng(0)

    def fuse(self):
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, rng = self.batch, self.rng
        _, _, height, width = images.shape
        rows = [[] for _ in range(images.shape[0])]
        for i, cls, cx, cy, w, h in batch["targets"].tolist():
            for _ in range(3):
                jitter = rng.normal(0, 0.06, 4) * [w, h, w, h]
                rows[int(i)].append(([cx + jitter[0], cy + jitter[1], w + jitter[2], h + jitter[3]], int(cls)))
        for i, (path, ((ry, rx), (left, top))) in enumerate(zip(batch["paths"], batch["ratio_pads"], strict=True)):
            for cls, x1, y1, x2, y2 in self.dataset_of().crowd_regions(path):
                box = [(x1 + x2) / 2 * rx + left, (y1 + y2) / 2 * ry + top, (x2 - x1) * rx / 3, (y2 - y1) * ry / 3]
                rows[i].append(([box[0] / width, box[1] / height, box[2] / width, box[3] / height], int(cls)))
            for _ in range(2):
                rows[i].append((list(rng.uniform(0.2, 0.8, 2)) + [0.1, 0.1], int(rng.integers(self.nc))))
        n = max(len(r) for r in rows)
        out = torch.zeros(images.shape[0], n, 4 + self.nc)
        for i, dets in enumerate(rows):
            for j, (box, cls) in enumerate(dets):
                out[i, j, :4] = torch.tensor(box) * torch.tensor([width, height, width, height])
                out[i, j, 4 + cls] = float(rng.uniform(0.05, 1.0))
        return out


def cocoeval_maps(annotation_file: Path, results: Path) -> tuple[float, float]:
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file))
        ev = COCOeval(gt, gt.loadRes(str(results)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1]), float(ev.stats[0])


def validate_with_oracle(monkeypatch, data, names: list[str], project, name: str = "exp", **meta):
    """`accelyolo.commands.validate.validate(data=...)` with the `Oracle` as the model (fed each batch, seed 0)."""
    import accelyolo.data
    import accelyolo.weights.importers
    from accelyolo.commands.validate import validate

    made = {}
    oracle = Oracle(len(names), lambda: made["loader"].dataset)
    real_build = accelyolo.data.validation_loader

    def build(dataset, *args, **kwargs):
        made["loader"] = real_build(dataset, *args, **kwargs)

        class Feeding:  # hands each batch to the oracle before the model sees it
            dataset = made["loader"].dataset

            def __iter__(self):
                for batch in made["loader"]:
                    oracle.batch = batch
                    yield batch

        return Feeding()

    with monkeypatch.context() as mp:
        mp.setattr(accelyolo.data, "validation_loader", build)
        meta = {"names": names, "config": {"imgsz": 128}, **meta}
        mp.setattr(accelyolo.weights.importers, "load_weights", lambda weights: (oracle, meta))
        return validate("oracle.safetensors", data=str(data), save_json=True, plots=False, project=str(project),
                        name=name, workers=0, verbose=False)  # fmt: skip


def test_val_save_json_equals_pycocotools_on_the_original_file(cards, tmp_path, monkeypatch):
    """`validate(data=instances.json, save_json=True)`: predictions.json carries the file's own image and
    category ids, and pycocotools on the original file (crowd included) gives our mAP50 and mAP50-95."""
    out = validate_with_oracle(monkeypatch, cards["json"], cards["names"], tmp_path, category_ids=CATEGORY_IDS)
    records = json.loads(out.predictions_json.read_text())
    assert {r["image_id"] for r in records} <= {i["id"] for i in cards["coco"]["images"]}
    assert {r["category_id"] for r in records} <= set(CATEGORY_IDS)
    map50, map50_95 = cocoeval_maps(cards["json"], out.predictions_json)
    assert 0.2 < out.metrics["mAP50-95"] < 0.95
    assert out.metrics["mAP50"] == pytest.approx(map50, abs=1e-4)
    assert out.metrics["mAP50-95"] == pytest.approx(map50_95, abs=1e-4)

    # the crowd rule mattered: without the crowd region, pycocotools scores the same answers lower
    without_crowd = dict(cards["coco"], annotations=[a for a in cards["coco"]["annotations"] if a["id"] != CROWD_ID])
    plain = tmp_path / "no_crowd.json"
    plain.write_text(json.dumps(without_crowd))
    assert cocoeval_maps(plain, out.predictions_json)[1] < map50_95 - 1e-4


def test_one_model_scores_the_same_on_yolo_txt_and_coco_json(cards, tmp_path, monkeypatch):
    """The same answers (the oracle's) on the YOLO set and on its COCO file without the crowd region."""
    without_crowd = dict(cards["coco"], annotations=[a for a in cards["coco"]["annotations"] if a["id"] != CROWD_ID])
    plain = cards["root"] / "images" / "val" / "no_crowd.json"
    plain.write_text(json.dumps(without_crowd))
    try:
        scores = [
            validate_with_oracle(monkeypatch, data, cards["names"], tmp_path, name=kind).metrics
            for kind, data in (("yolo", cards["yolo"]), ("json", plain))
        ]
    finally:
        plain.unlink()
    assert 0.2 < scores[0]["mAP50-95"] < 0.95
    assert scores[1]["mAP50"] == pytest.approx(scores[0]["mAP50"], abs=1e-6)
    assert scores[1]["mAP50-95"] == pytest.approx(scores[0]["mAP50-95"], abs=1e-6)


def test_val_refuses_a_file_with_other_categories(cards, monkeypatch, tmp_path):
    import accelyolo.weights.importers
    from accelyolo.commands.validate import validate

    meta = {"names": cards["names"][::-1], "config": {"imgsz": 128}, "category_ids": CATEGORY_IDS}
    monkeypatch.setattr(accelyolo.weights.importers, "load_weights", lambda weights: (Oracle(6, None), meta))
    with pytest.raises(DataError, match=r"the model's classes \['ace'.* differ from the categories"):
        validate("m.safetensors", data=str(cards["json"]), plots=False, project=str(tmp_path), workers=0)


def test_training_on_a_coco_file_keeps_its_ids_and_reports_its_annotations(cards, tmp_path, one_thread):
    """`fit(data=instances.json)`: the checkpoint holds the category ids, data_report.json names the broken
    annotation by id, and the model scores the same on the YOLO set and on its `data convert` COCO copy."""
    from accelyolo import fit
    from accelyolo.commands.validate import validate
    from accelyolo.weights.checkpoint import read_checkpoint_metadata
    from tests.conftest import tiny_train_options

    options = tiny_train_options(cards["json"], tmp_path, epochs=1, max_steps_per_epoch=2, batch_size=4)
    result = fit(**options)
    meta = read_checkpoint_metadata(result.last_checkpoint)
    assert meta["category_ids"] == CATEGORY_IDS and meta["names"] == cards["names"]
    report = json.loads((result.run_dir / "data_report.json").read_text())
    assert [p["annotation"] for p in report["splits"]["train"]["problems"]] == [BROKEN_ID]
    convert(cards["yolo"], "coco", tmp_path / "coco")
    scores = []
    for data in (cards["yolo"], tmp_path / "coco" / "data.yaml"):
        out = validate(str(result.last_checkpoint), data=str(data), imgsz=64, plots=False, workers=0,
                       project=str(tmp_path / "val"), name=data.parent.name, verbose=False)  # fmt: skip
        scores.append(out.metrics)
    assert scores[0]["mAP50-95"] == pytest.approx(scores[1]["mAP50-95"], abs=1e-6)
    assert scores[0]["mAP50"] == pytest.approx(scores[1]["mAP50"], abs=1e-6)
    from accelyolo.commands.predict import predict

    (found,) = predict(str(result.last_checkpoint), source=_first_image(cards), conf_thres=0.0,
                       max_det=5, project=str(tmp_path / "predict"))  # fmt: skip
    detections = found.to_dict()["detections"]
    assert detections and all(d["category_id"] == CATEGORY_IDS[d["class"]] for d in detections)


def _first_image(cards) -> str:
    return str(sorted((cards["root"] / "images" / "val").glob("*.jpg"))[0])


def test_the_cli_checks_and_converts_a_coco_file(cards, tmp_path, capsys):
    from accelyolo.commands.cli import main

    assert main(["data", "check", str(cards["json"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["names"] == cards["names"] and report["splits"]["val"]["crowd_regions"] == 1
    assert f"annotation id {BROKEN_ID}" in report["splits"]["val"]["problems"][0]["problem"]
    assert main(["data", "convert", str(cards["json"]), "--to", "yolo", str(tmp_path / "out")]) == 0
    assert "1 crowd regions left out" in capsys.readouterr().out
    assert main(["data", "convert", str(tmp_path / "nothing.json"), "--to", "coco", str(tmp_path / "x")]) == 2
    assert "nothing.json: annotation file not found" in capsys.readouterr().err


def test_single_cls_rect_and_disk_cache_take_a_coco_file(cards, tmp_path):
    spec = load_data_yaml(cards["json"])
    ds = YoloDataset(spec.splits["val"], imgsz=64, names=spec.names, single_cls=True, rect=True, batch_size=8,
                     cache="disk", cache_dir=tmp_path)  # fmt: skip
    assert ds.names == ["item"] and ds.report["boxes"] == 143
    assert {int(lb[:, 0].max()) for lb in ds.labels if len(lb)} == {0}
    (crowd,) = [ds.crowd_regions(f) for f in ds.im_files if len(ds.crowd_regions(f))]
    assert crowd[:, 0].tolist() == [0.0]
    batch = next(iter(build_dataloader(ds, batch_size=8, workers=0, shuffle=False)))
    assert batch["images"].shape[0] == 8
