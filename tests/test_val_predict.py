"""`accelyolo val` / `validate()` and `accelyolo predict` / `predict()` on a checkpoint trained here."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest

import accelyolo
from accelyolo.commands.fit import fit
from tests.conftest import tiny_train_options
from tests.test_distributed import TRAIN, env, launch_args

REPO = TRAIN.rsplit("/accelyolo/", 1)[0]


@pytest.fixture(scope="module")
def demo96(tmp_path_factory):
    """A demo set of 96 px images: large enough for the tiny model to learn something in seconds."""
    from accelyolo.data import generate_demo

    return generate_demo(tmp_path_factory.mktemp("demo96"), n_train=64, n_val=16, imgsz=96, seed=0)


@pytest.fixture(scope="module")
def trained(demo96, tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    result = fit(
        **tiny_train_options(
            demo96,
            project,
            imgsz=96,
            epochs=20,
            nbs=8,
            lr0=0.01,
            warmup_epochs=1.0,
            warmup_min_iters=6,
            close_mosaic=3,
            seed=1,
        )
    )
    assert result.metrics["mAP50"] > 0.05  # learned something, so the comparisons below are not of zeros
    return result


def test_validate_matches_the_trainers_validation(trained, demo96, tmp_path):
    out = accelyolo.validate(
        weights=str(trained.best_checkpoint),
        data=str(demo96),
        imgsz=96,
        batch_size=16,
        workers=0,
        rect_val=False,
        project=str(tmp_path),
        save_json=True,
    )
    for key in ("mAP50", "mAP50-95", "precision", "recall"):
        assert out.metrics[key] == pytest.approx(trained.metrics[key], abs=1e-6), key
    for name in (
        "confusion_matrix.png",
        "PR_curve.png",
        "F1_curve.png",
        "P_curve.png",
        "R_curve.png",
        "val_batch0_labels.png",
        "val_batch0_pred.png",
        "predictions.json",
    ):
        assert (out.save_dir / name).is_file(), name
    records = json.loads(out.predictions_json.read_text())
    assert records, "a trained model predicts something at conf 0.001"
    first = records[0]
    assert set(first) == {"image_id", "category_id", "bbox", "score"}
    assert isinstance(first["image_id"], str) and first["image_id"].startswith("val_")
    assert 0 <= first["category_id"] < 4 and len(first["bbox"]) == 4
    x, y, w, h = first["bbox"]
    assert w >= 0 and h >= 0 and x >= -1 and y >= -1 and x + w <= 97 and y + h <= 97  # original pixels


def test_val_cli_prints_the_last_line(trained, demo96, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelyolo",
            "val",
            "--weights",
            str(trained.best_checkpoint),
            "--data",
            str(demo96),
            "--workers",
            "0",
            "--project",
            str(tmp_path),
            "--no-plots",
        ],
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("mAP50=") and " mAP50-95=" in last
    assert float(last.split()[0].split("=")[1]) > 0


def test_val_cli_rejects_a_damaged_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    proc = subprocess.run(
        [sys.executable, "-m", "accelyolo", "val", "--weights", str(bad)],
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
    )
    assert proc.returncode == 2
    assert "bad.safetensors" in proc.stderr


@pytest.mark.slow
def test_val_under_two_processes_equals_one(trained, demo96, tmp_path):
    common = [
        "--weights",
        str(trained.best_checkpoint),
        "--data",
        str(demo96),
        "--workers",
        "0",
        "--no-plots",
        "--batch-size",
        "4",
        "--project",
        str(tmp_path),
    ]
    script = f"{REPO}/accelyolo/validation.py"
    one = subprocess.run([sys.executable, script, *common], capture_output=True, text=True, env=env(), timeout=300)
    two = subprocess.run(launch_args(2) + [script, *common], capture_output=True, text=True, env=env(), timeout=300)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    last_one = one.stdout.strip().splitlines()[-1]
    assert last_one.startswith("mAP50=")
    assert two.stdout.strip().splitlines()[-1] == last_one
    assert two.stdout.count("mAP50=") == 1  # printed by the main process only


def test_predict_folder_with_a_corrupt_file(trained, demo96, tmp_path, caplog):
    images = sorted((demo96.parent / "images" / "val").iterdir())[:3]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in images:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_text("not an image")
    results = accelyolo.predict(
        weights=str(trained.inference_checkpoint),
        source=str(folder),
        conf_thres=0.001,
        save=True,
        project=str(tmp_path / "pred"),
    )
    assert [r.path.rsplit("/", 1)[-1] for r in results] == [p.name for p in images]
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("accelyolo")]
    assert len(warnings) == 1 and "broken.jpg" in warnings[0].getMessage()
    for r in results:
        assert r.boxes.shape[1] == 4 and len(r.scores) == len(r.classes) == len(r.names)
        if len(r.boxes):
            assert np.all(r.boxes[:, 2] >= r.boxes[:, 0]) and r.boxes.max() <= 96 + 1e-3
    saved = tmp_path / "pred" / "exp"
    assert (saved / "predictions.json").is_file()
    assert len(list(saved.glob("*.png"))) == 3


def test_cli_help_lists_the_subcommands():
    proc = subprocess.run([sys.executable, "-m", "accelyolo", "--help"], capture_output=True, text=True, env=env())
    assert proc.returncode == 0
    for word in ("train", "val", "predict", "data"):
        assert word in proc.stdout


@pytest.mark.parametrize(
    "module", ["accelyolo.commands.validate", "accelyolo.commands.predict", "accelyolo.commands.export"]
)
def test_val_predict_and_export_flags_are_the_training_options(module):
    """Every flag of val/predict/export that is a training option has the option's flag, dest and type (one
    name everywhere); val and predict keep `--conf` / `--iou` as short spellings."""
    import argparse
    import dataclasses
    import importlib

    from accelyolo.core.config import TrainConfig
    from accelyolo.core.flags import add_config_arguments, option_flag

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    train = argparse.ArgumentParser()
    add_config_arguments(train)
    train_types = {a.dest: a.type for a in train._actions}
    parser = argparse.ArgumentParser()
    importlib.import_module(module).add_arguments(parser)
    shared = [a for a in parser._actions if a.dest in fields and a.dest != "weights"]
    assert len(shared) == {"validate": 12, "predict": 7, "export": 1}[module.rsplit(".", 1)[1]]
    for action in shared:
        assert action.option_strings[0] == option_flag(action.dest), action.option_strings
        assert getattr(action.type, "__name__", None) == getattr(train_types[action.dest], "__name__", None)
    if module.endswith("export"):
        return
    base = ["--weights", "w.safetensors"] + (["--source", "x.jpg"] if module.endswith("predict") else [])
    by_config_name = parser.parse_args(base + ["--conf-thres", "0.2", "--iou-thres", "0.55"])
    by_short_name = parser.parse_args(base + ["--conf", "0.2", "--iou", "0.55"])
    assert (by_config_name.conf_thres, by_config_name.iou_thres) == (0.2, 0.55)
    assert (by_short_name.conf_thres, by_short_name.iou_thres) == (0.2, 0.55)


@pytest.mark.parametrize("function", ["validate", "predict"])
def test_validate_and_predict_keywords_are_the_option_names(function, tmp_path):
    """The keywords of `validate()` / `predict()` that are training options carry the options' names; an old
    name (`conf=`) still works with a FutureWarning, and both names at once are refused."""
    import dataclasses
    import inspect

    from accelyolo.core.config import TrainConfig
    from accelyolo.core.errors import AccelyoloError
    from accelyolo.core.flags import RENAMED_KEYWORDS

    call = getattr(accelyolo, function)
    target = getattr(importlib.import_module(f"accelyolo.commands.{function}"), function)
    parameters = set(inspect.signature(target).parameters)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {"imgsz", "conf_thres", "iou_thres", "max_det", "project", "name", "exist_ok"} <= parameters & fields
    assert not parameters & set(RENAMED_KEYWORDS)
    missing = tmp_path / "missing.safetensors"
    where = {"source": str(tmp_path)} if function == "predict" else {}
    (tmp_path / "a.jpg").write_bytes(b"")  # predict reads the source before the weights
    old_name = dict(conf=0.5, plots=False) if function == "validate" else dict(conf=0.5)
    with (
        pytest.warns(FutureWarning, match="'conf' is now 'conf_thres'"),
        pytest.raises(AccelyoloError, match="missing"),
    ):
        call(weights=str(missing), **old_name, **where)
    with pytest.raises(TypeError, match="same option"):
        call(weights=str(missing), conf=0.5, conf_thres=0.5, **where)
