"""The quality benchmark's data and scoring (benchmarks/varied_set.py, benchmarks/quality.py), no training.

What is checked is behaviour: the generated set is well-formed and varied, and the scoring maps each
tool's image ids onto one ground truth in original-image pixels, so a perfect prediction scores 1.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pycocotools")
from PIL import Image  # noqa: E402

from accelyolo.data import load_data_yaml  # noqa: E402
from accelyolo.data.checks import check_image_label, img2label_path  # noqa: E402
from accelyolo.evaluation.metrics import coco_json_records  # noqa: E402
from benchmarks.quality import (  # noqa: E402
    GroundTruth,
    coco_scores,
    ground_truth,
    main,
    peer_data_yaml,
    report,
    set_name,
)
from benchmarks.varied_set import ASPECTS, WIDTHS, make_varied_set  # noqa: E402
from tests.conftest import assert_close_to_scale  # noqa: E402


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    return make_varied_set(tmp_path_factory.mktemp("varied") / "set", n_train=4, n_val=8, seed=5)


def _label_rows(image) -> np.ndarray:
    return np.loadtxt(img2label_path(image), ndmin=2)


def _perfect_predictions(spec) -> list[dict]:
    """One record per labelled box, made as `accelyolo.validate` makes them (file stem as image id)."""
    records = []
    for image in spec.splits["val"]:
        width, height = Image.open(image).size  # read here, independently of the benchmark
        rows = _label_rows(image)
        x1 = (rows[:, 1] - rows[:, 3] / 2) * width
        y1 = (rows[:, 2] - rows[:, 4] / 2) * height
        dets = np.c_[x1, y1, x1 + rows[:, 3] * width, y1 + rows[:, 4] * height, np.ones(len(rows)), rows[:, 0]]
        records += coco_json_records(str(image), dets)
    return records


def test_varied_set_is_consistent_and_varied(varied, tmp_path):
    spec = load_data_yaml(varied)
    assert spec.names == ["target"] and len(spec.splits["train"]) == 4 and len(spec.splits["val"]) == 8
    sizes = set()
    for image in spec.splits["train"] + spec.splits["val"]:
        assert image.suffix == ".jpg"
        entry = check_image_label(image, nc=1)
        assert entry["status"] == "ok" and entry["problems"] == []  # rows in range, inside the image
        height, width = entry["shape"]
        sizes.add((height, width))
        assert WIDTHS[0] <= width <= WIDTHS[1]
        assert ASPECTS[0] * 0.99 <= width / height <= ASPECTS[1] * 1.01
        rows = _label_rows(image)
        assert (rows[:, 0] == 0).all()
        assert (rows[:, 3:] >= 0.1).all()  # large objects
        x1, x2 = rows[:, 1] - rows[:, 3] / 2, rows[:, 1] + rows[:, 3] / 2
        y1, y2 = rows[:, 2] - rows[:, 4] / 2, rows[:, 2] + rows[:, 4] / 2
        assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 1).all() and (y2 <= 1).all()
    assert len(sizes) >= 6  # varied sizes, not one letterbox shape
    again = make_varied_set(tmp_path / "again", n_train=4, n_val=8, seed=5)
    first = sorted(p.read_text() for p in (varied.parent / "labels").rglob("*.txt"))
    assert sorted(p.read_text() for p in (again.parent / "labels").rglob("*.txt")) == first  # from the seed


def test_ground_truth_in_original_pixels(varied):
    spec = load_data_yaml(varied)
    truth = ground_truth(varied)
    assert [im["file_name"] for im in truth.coco["images"]] == [p.name for p in spec.splits["val"]]
    for image in spec.splits["val"]:
        width, height = Image.open(image).size
        info = truth.coco["images"][truth.ids[image.stem] - 1]
        assert (info["width"], info["height"]) == (width, height)
        boxes = [a["bbox"] for a in truth.coco["annotations"] if a["image_id"] == info["id"]]
        rows = _label_rows(image)
        expected = np.c_[(rows[:, 1] - rows[:, 3] / 2) * width, (rows[:, 2] - rows[:, 4] / 2) * height]
        expected = np.c_[expected, rows[:, 3] * width, rows[:, 4] * height]
        # float32 labels round ~6e-8 of the image's size (up to 1600 px here): 1e-6 of it
        assert_close_to_scale(np.array(boxes), expected, rel=1e-6, at_least=max(width, height))
    assert min(a["id"] for a in truth.coco["annotations"]) == 1  # COCOeval reads id 0 as "unmatched"


def test_perfect_predictions_score_one_and_shifted_ones_fail_high_iou(varied):
    spec = load_data_yaml(varied)
    truth = ground_truth(varied)
    perfect = _perfect_predictions(spec)
    assert isinstance(perfect[0]["image_id"], str)  # stems, as both tools write them
    assert coco_scores(truth, perfect) == pytest.approx({"AP50": 1.0, "AP75": 1.0, "AP50-95": 1.0})
    # ultralytics' records carry an extra file_name; the ids are the same stems
    tagged = [{**r, "file_name": f"{r['image_id']}.jpg"} for r in perfect]
    assert coco_scores(truth, tagged)["AP50-95"] == pytest.approx(1.0)
    # every box moved right by a fifth of its width: IoU 0.8 / 1.2 = 0.67, a hit at 0.5, a miss at 0.75
    shifted = [{**r, "bbox": [r["bbox"][0] + r["bbox"][2] / 5, *r["bbox"][1:]]} for r in perfect]
    scores = coco_scores(truth, shifted)
    assert scores["AP50"] == pytest.approx(1.0) and scores["AP75"] == 0.0 and 0 < scores["AP50-95"] < 0.5
    assert coco_scores(truth, []) == {"AP50": 0.0, "AP75": 0.0, "AP50-95": 0.0}


def test_all_digit_stems_map_from_int_ids_and_unknown_ids_are_refused():
    coco = {
        "images": [{"id": 1, "file_name": "000042.jpg", "height": 100, "width": 200}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 0, "bbox": [10, 20, 50, 40], "area": 2000, "iscrowd": 0}
        ],
        "categories": [{"id": 0}],
    }
    truth = GroundTruth(coco=coco, ids={"000042": 1, "42": 1})
    hit = {"category_id": 0, "bbox": [10, 20, 50, 40], "score": 0.9}
    assert coco_scores(truth, [{**hit, "image_id": 42}])["AP50-95"] == pytest.approx(1.0)
    assert coco_scores(truth, [{**hit, "image_id": "000042"}])["AP50-95"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'43'"):
        coco_scores(truth, [{**hit, "image_id": 43}])


def test_ground_truth_of_all_digit_stems(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        Image.new("RGB", (64, 32), (90, 90, 90)).save(tmp_path / "images" / split / "000007.jpg")
        (tmp_path / "labels" / split / "000007.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [thing]\n")
    truth = ground_truth(tmp_path / "data.yaml")
    assert truth.ids == {"000007": 1, "7": 1}
    assert truth.coco["annotations"][0]["bbox"] == [16.0, 8.0, 32.0, 16.0]


def test_peer_data_yaml_mirrors_the_set_so_the_peer_writes_nothing_into_it(varied, tmp_path):
    copy = peer_data_yaml(varied, tmp_path / "out")
    spec, original = load_data_yaml(copy), load_data_yaml(varied)
    assert spec.root.is_absolute() and spec.root != original.root
    assert [p.resolve() for p in spec.splits["val"]] == [p.resolve() for p in original.splits["val"]]
    for split in ("images/val", "labels/val"):  # real folders: ultralytics resolves a linked split folder
        assert (spec.root / split).is_dir() and not (spec.root / split).is_symlink()
    labels = spec.root / "labels"
    (labels / "val.cache").write_text("peer cache")
    assert not (original.root / "labels" / "val.cache").exists()
    assert peer_data_yaml(varied, tmp_path / "out") == copy  # a second call reuses the mirror


def _record(name, side, seed, checkpoint, ap, options=None):
    return {
        "set": name,
        "side": side,
        "seed": seed,
        "checkpoint": checkpoint,
        "options": options or {},
        "AP50": ap + 0.2,
        "AP75": ap + 0.05,
        "AP50-95": ap,
        "own_map": ap,
        "train_s": 60.0,
    }


def _ratio_lines(text):
    return dict(line.rsplit("=", 1) for line in text.splitlines() if line.startswith("quality_ratio"))


def test_report_table_and_ratios_over_sets_seeds_and_checkpoints():
    records = [
        _record("aquarium", "ours", 0, "last", 0.4), _record("aquarium", "ours", 1, "last", 0.6),
        _record("aquarium", "ours", 0, "best", 0.6), _record("aquarium", "ours", 1, "best", 0.6),
        _record("aquarium", "peer", 0, "last", 0.4), _record("aquarium", "peer", 1, "last", 0.4),
        _record("cards", "ours", 0, "last", 0.2), _record("cards", "peer", 0, "last", 0.25),
        _record("cards", "peer", 0, "best", 0.2),
    ]  # fmt: skip
    text = report(records)
    row = "| aquarium | ours | last | 0,1 | 0.7000 [0.6000-0.8000] | 0.5500 [0.4500-0.6500] | 0.5000 [0.4000-0.6000] |"
    assert row in text
    assert "| cards | peer | best | 0 | " in text
    # last: aquarium 0.5/0.4 = 1.25, cards 0.2/0.25 = 0.8 -> geometric mean 1.0
    # best (each side's best, else its last): aquarium 0.6/0.4 = 1.5, cards 0.2/0.2 = 1.0 -> sqrt(1.5), min 1.0
    assert _ratio_lines(text) == {
        "quality_ratio_best": "1.2247",
        "quality_ratio_last": "1.0000",
        "quality_ratio_min": "1.0000",
    }
    assert text.splitlines()[-1] == "quality_ratio_min=1.0000"
    assert "aquarium: ours / peer (AP50-95 mean, best checkpoints) = 1.5000" in text


def test_report_ratios_compare_the_seeds_both_sides_scored():
    """An extra seed of one side (ours seeds 0-2, the peer's 0-1) does not enter the ratio: 0.5 / 0.4."""
    records = [
        _record("cards", "ours", 0, "last", 0.4), _record("cards", "ours", 1, "last", 0.6),
        _record("cards", "ours", 2, "last", 0.9), _record("cards", "peer", 0, "last", 0.3),
        _record("cards", "peer", 1, "last", 0.5),
    ]  # fmt: skip
    text = report(records)
    assert "| cards | ours | last | 0,1,2 | " in text  # the table keeps every seed
    assert _ratio_lines(text)["quality_ratio_last"] == "1.2500"
    disjoint = [_record("cards", "ours", 2, "last", 0.6), _record("cards", "peer", 0, "last", 0.4)]
    assert _ratio_lines(report(disjoint))["quality_ratio_last"] == "1.5000"  # no common seed: all of each


def test_report_names_each_option_set_of_ours_and_is_nan_without_the_peer():
    records = [_record("cards", "ours", 0, "last", 0.3), _record("cards", "ours", 0, "last", 0.5, {"optimizer": "SGD"})]
    text = report(records)
    assert "| cards | ours optimizer=SGD | last | 0 |" in text
    assert _ratio_lines(text) == {
        "quality_ratio_best": "nan",
        "quality_ratio_last": "nan",
        "quality_ratio_min": "nan",
        "quality_ratio_best[optimizer=SGD]": "nan",
        "quality_ratio_last[optimizer=SGD]": "nan",
        "quality_ratio_min[optimizer=SGD]": "nan",
    }
    records.append(_record("cards", "peer", 0, "last", 0.4))
    ratios = _ratio_lines(report(records))
    assert ratios["quality_ratio_last"] == "0.7500" and ratios["quality_ratio_last[optimizer=SGD]"] == "1.2500"


def test_report_mode_reads_the_scores_of_several_runs(tmp_path, capsys):
    import json

    for i, record in enumerate([_record("cards", "ours", 0, "last", 0.3), _record("cards", "peer", 0, "last", 0.2)]):
        folder = tmp_path / f"run{i}" / "cards"
        folder.mkdir(parents=True)
        (folder / "scores.jsonl").write_text(json.dumps(record) + "\n")
    assert main(["--report", str(tmp_path / "run0"), str(tmp_path / "run1")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-2] == "quality_ratio_last=1.5000"
    (tmp_path / "empty").mkdir()
    assert main(["--report", str(tmp_path / "empty")]) == 2
    assert "no scores.jsonl" in capsys.readouterr().err
    assert main([]) == 2


def test_set_names_come_from_the_data_yaml_folder():
    assert set_name("/x/datasets/cards/data.yaml") == "cards"
    assert set_name("/x/varied.yaml") == "varied"
