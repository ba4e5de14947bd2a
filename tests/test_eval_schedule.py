"""YOLOv6's evaluation schedule and checkpoints: heavy-eval range, final-only validation, the last N epoch
bundles, best_stop_aug (best after strong augmentation stopped), and the logged close-mosaic epoch."""

from __future__ import annotations

import csv
import logging

import pytest

from accelyolo.commands.fit import fit
from accelyolo.core.config import ConfigError, load_config
from accelyolo.training.trainer import Trainer
from accelyolo.weights.checkpoint import load_checkpoint_bundle, read_checkpoint_metadata
from tests.conftest import tiny_train_options

pytestmark = pytest.mark.usefixtures("one_thread")


def validated(**options):
    cfg = load_config(**options)
    trainer = Trainer(cfg)
    return [e for e in range(1, cfg.epochs + 1) if trainer.should_validate(e)]


def test_validation_epochs():
    assert validated(epochs=10, val_interval=4) == [4, 8, 10]
    assert validated(epochs=10, val_interval=4, heavy_eval_range=3) == [4, 8, 9, 10]
    assert validated(epochs=10, val_interval=20, heavy_eval_range=2) == [9, 10]
    assert validated(epochs=10, val_final_only=True, heavy_eval_range=5) == [10]
    assert validated(epochs=3, heavy_eval_range=30) == [1, 2, 3]


def test_schedule_options_are_checked():
    with pytest.raises(ConfigError, match="'heavy_eval_range' must be >= 0"):
        load_config(heavy_eval_range=-1)
    with pytest.raises(ConfigError, match="'save_last_n' must be >= 0"):
        load_config(save_last_n=-2)


def test_last_n_epoch_bundles_best_stop_aug_and_the_close_mosaic_epoch(tiny_demo, tmp_path, caplog):
    opts = tiny_train_options(
        tiny_demo, tmp_path, epochs=4, close_mosaic=2, val_interval=2, save_last_n=2, max_steps_per_epoch=2
    )
    opts["best_min_score"] = 0.0  # the tiny model scores far below predict's conf; every epoch may be best here
    with caplog.at_level(logging.INFO, logger="accelyolo"):
        result = fit(**opts)
    weights = result.run_dir / "weights"
    assert sorted(p.name for p in weights.glob("epoch*.safetensors")) == ["epoch3.safetensors", "epoch4.safetensors"]
    for k in (3, 4):  # full, resumable bundles
        bundle = load_checkpoint_bundle(weights / f"epoch{k}.safetensors")
        assert bundle.metadata["epoch"] == k and bundle.optimizer_state and bundle.rng_states
    # Strong augmentation stops at epoch 3 (logged once); epoch 4 is the only validation after it.
    stops = [r.getMessage() for r in caplog.records if "strong augmentation" in r.getMessage()]
    assert stops == ["epoch 3: strong augmentation (mosaic, mixup) off from here on (close_mosaic)"]
    meta = read_checkpoint_metadata(weights / "best_stop_aug.safetensors")
    assert meta["epoch"] == 4 and meta["best_stop_aug_epoch"] == 4
    with (result.run_dir / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [bool(r["metrics/mAP50-95"]) for r in rows] == [False, True, False, True]
    assert meta["best_stop_aug_fitness"] == pytest.approx(float(rows[3]["fitness"]), rel=1e-5)
    # An epoch bundle resumes: from epoch 3 the run trains epoch 4 again, and epoch 4's first row goes.
    again = fit(resume=str(weights / "epoch3.safetensors"))
    assert again.epochs_completed == 4
    with (result.run_dir / "results.csv").open() as handle:
        assert [r["epoch"] for r in csv.DictReader(handle)] == ["1", "2", "3", "4"]


def test_best_stop_aug_waits_for_strong_augmentation_to_stop(tiny_demo, tmp_path):
    result = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=2, close_mosaic=1, max_steps_per_epoch=2))
    assert (result.run_dir / "weights" / "best_stop_aug.safetensors").exists()
    assert read_checkpoint_metadata(result.run_dir / "weights" / "best_stop_aug.safetensors")["epoch"] == 2
    plain = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=2, close_mosaic=0, max_steps_per_epoch=2))
    assert not (plain.run_dir / "weights" / "best_stop_aug.safetensors").exists()
