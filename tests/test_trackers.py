"""Trackers: one run logs to TensorBoard, wandb (offline), mlflow (a file store) and trackio (its local database)
at once; each gets the run's
options, the epoch scalars and the pictures (training batches, validation predictions, results.png). A
tracker whose package is missing skips its test (`pip install -e ".[trackers]"`)."""

from __future__ import annotations

import json
import sqlite3
import sys

import pytest
import yaml

from accelyolo.commands.fit import fit
from tests.conftest import tiny_train_options

pytestmark = pytest.mark.usefixtures("one_thread")

PICTURES = {"train_batch0", "train_batch1", "train_batch2", "val_predictions", "results"}


@pytest.fixture(scope="module")
def tracked_run(tiny_demo, tmp_path_factory):
    """One 1-epoch run with every tracker installed here among tensorboard, wandb, mlflow and trackio, offline."""
    import accelerate.utils

    names = [
        name
        for name, available in (
            ("tensorboard", accelerate.utils.is_tensorboard_available),
            ("wandb", accelerate.utils.is_wandb_available),
            ("mlflow", accelerate.utils.is_mlflow_available),
            # trackio reads TRACKIO_DIR when imported: only a first import here writes into this test's folder
            ("trackio", lambda: accelerate.utils.is_trackio_available() and "trackio" not in sys.modules),
        )
        if available()
    ]
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for key, value in {
            "WANDB_MODE": "offline",  # nothing leaves the machine; the run is written to <run>/wandb
            "WANDB_SILENT": "true",
            "WANDB_CONFIG_DIR": str(root / "wandb-config"),
            "WANDB_CACHE_DIR": str(root / "wandb-cache"),
            "WANDB_DATA_DIR": str(root / "wandb-data"),
            "MLFLOW_TRACKING_URI": f"file:{root / 'mlruns'}",
            "MLFLOW_ALLOW_FILE_STORE": "true",  # mlflow 3 asks for a database unless told the folder is wanted
            "TRACKIO_DIR": str(root / "trackio"),  # its sqlite database per project (the run's name) and media
        }.items():
            monkeypatch.setenv(key, value)
        options = tiny_train_options(tiny_demo, root / "runs", epochs=1, max_steps_per_epoch=3, plots=True)
        result = fit(**options, log_with=",".join(names))
    return result, root, names


def _need(names, tracker):
    if tracker not in names:
        pytest.skip(f"{tracker} is not installed (pip install -e '.[trackers]')")


def test_tensorboard_gets_options_scalars_and_pictures(tracked_run):
    result, _, names = tracked_run
    _need(names, "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(result.run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert set(events.Tags()["images"]) >= PICTURES
    assert "metrics/mAP50-95" in events.Tags()["scalars"]
    options = [yaml.safe_load(p.read_text()) for p in result.run_dir.glob("*/hparams.yml")]
    assert options and options[0]["imgsz"] == 64 and options[0]["model"] == "yolov8t"


def test_wandb_offline_run_gets_options_scalars_and_pictures(tracked_run):
    result, _, names = tracked_run
    _need(names, "wandb")
    (run,) = (result.run_dir / "wandb").glob("offline-run-*")
    logged = next(run.glob("run-*.wandb")).read_bytes()  # the run's record log, synced later by `wandb sync`
    for key in (b"imgsz", b"lr0", b'"yolov8t"', b"metrics/mAP50-95", b"train/box_loss"):
        assert key in logged, key
    pictures = {p.name.rsplit("_", 2)[0] for p in (run / "files" / "media" / "images").glob("*.png")}
    assert pictures == PICTURES


def test_mlflow_file_store_gets_options_scalars_and_pictures(tracked_run):
    _, root, names = tracked_run
    _need(names, "mlflow")
    (run,) = (p for p in (root / "mlruns").glob("*/*") if (p / "params").is_dir())
    assert (run / "params" / "imgsz").read_text() == "64"
    assert (run / "params" / "model").read_text() == "yolov8t"
    assert (run / "metrics" / "metrics" / "mAP50-95").is_file()
    pictures = {p.name.split("+", 1)[0] for p in (run / "artifacts" / "images").glob("*.png")}
    assert pictures == PICTURES


def test_trackio_local_database_gets_options_scalars_and_pictures(tracked_run):
    result, root, names = tracked_run
    _need(names, "trackio")
    with sqlite3.connect(root / "trackio" / f"{result.run_dir.name}.db") as db:
        (config,) = (json.loads(row[0]) for row in db.execute("SELECT config FROM configs"))
        logged = [json.loads(row[0]) for row in db.execute("SELECT metrics FROM metrics")]
    assert config["imgsz"] == 64 and config["model"] == "yolov8t"
    assert any("metrics/mAP50-95" in row for row in logged)
    pictures = {key for row in logged for key, value in row.items() if isinstance(value, dict)}
    assert pictures == PICTURES and len(list((root / "trackio" / "media").rglob("*.png"))) == len(PICTURES)


def test_log_with_names_every_accelerate_tracker_and_refuses_others():
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    from accelyolo.core.config import ConfigError
    from accelyolo.training.trackers import TRACKERS, chosen_trackers

    assert set(TRACKERS) == set(LOGGER_TYPE_TO_CLASS)  # a tracker Accelerate adds fails here until listed
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbored'"):
        chosen_trackers("tensorboard,tensorbored")
