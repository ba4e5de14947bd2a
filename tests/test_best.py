"""Which epoch becomes `best` (DESIGN decision 20): never one validated before the warm-up ended, never a
degenerate model (its highest validation score below predict's conf), and the last epoch when none qualifies."""

from __future__ import annotations

import csv
import logging

import pytest

from accelyolo.commands.fit import fit
from accelyolo.core.config import PREDICT_CONF, ConfigError, load_config
from accelyolo.training.callbacks import Callback
from accelyolo.training.experiment import Experiment
from accelyolo.training.optim import YoloSchedule, warmup_iterations
from accelyolo.training.trainer import ineligible_reason
from accelyolo.weights.checkpoint import read_checkpoint_metadata
from tests.conftest import tiny_train_options

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_model_scoring_below_the_prediction_threshold_is_not_eligible():
    assert PREDICT_CONF == 0.25 == load_config().best_min_score
    assert ineligible_reason(True, 0.9, PREDICT_CONF) == ""
    assert ineligible_reason(True, PREDICT_CONF, PREDICT_CONF) == ""  # at the threshold predict keeps it
    # The real run of issue 21: epoch 1 ranked boxes well (mAP50-95 0.152) but scored none above 0.013.
    why = ineligible_reason(True, 0.0125, PREDICT_CONF)
    assert "0.0125" in why and "best_min_score 0.25" in why
    assert ineligible_reason(True, 0.0, PREDICT_CONF)  # no detection at all
    assert ineligible_reason(True, 0.0125, 0.0) == ""  # best_min_score 0: no floor
    assert ineligible_reason(True, None, PREDICT_CONF) == ""  # an evaluator without max_score: not checked
    assert "warm-up" in ineligible_reason(False, 0.9, PREDICT_CONF)  # whatever the scores
    with pytest.raises(ConfigError, match="best_min_score"):
        load_config(best_min_score=1.5)


@pytest.mark.parametrize(
    ("epochs", "warmup_epochs", "eligible"),
    [
        (30, 3.0, [False, False, True, True]),  # the default: epoch 3 ends where the warm-up does (first 4 shown)
        (3, 2.0, [False, True, True]),
        (3, 2.5, [False, True, True]),  # the warm-up stops at the last epoch's start (14 of 18 iterations)
        (4, 3.0, [False, False, True, True]),
        (2, 3.0, [True, True]),  # cut to the first epoch, which ends with it
        (1, 3.0, [True]),
        (3, 0.0, [True, True, True]),  # no warm-up
    ],
)
def test_the_warm_up_never_keeps_the_last_epoch_from_being_best(epochs, warmup_epochs, eligible):
    """An epoch is past the warm-up when the warm-up has ended by its last batch; `warmup_iterations` never lets
    the warm-up pass the last epoch's start, so the last epoch always is."""
    batches = 7
    schedule = YoloSchedule(
        lr0=0.01,
        lrf=0.01,
        kind="linear",
        epochs=epochs,
        batches_per_epoch=batches,
        warmup_iters=warmup_iterations(warmup_epochs, batches, epochs=epochs),
        warmup_bias_lr=0.1,
        warmup_momentum=0.8,
        momentum=0.937,
        nbs=64,
        total_batch=16,
    )
    assert [schedule.warmup_over_by(e) for e in range(1, len(eligible) + 1)] == eligible
    assert schedule.warmup_over_by(epochs)


class RiggedScores:
    """The real evaluator, with the fitness and highest score of each epoch replaced by the test's numbers."""

    def __init__(self, inner, by_epoch):
        self.inner, self.by_epoch, self.epoch = inner, by_epoch, 0

    def set_epoch(self, epoch):  # the trainer names the epoch each validation measures
        self.epoch = epoch

    def evaluate(self, model):
        result = self.inner.evaluate(model)
        result.fitness, result.max_score = self.by_epoch[self.epoch]
        return result


def rigged_experiment(by_epoch):
    class Rigged(Experiment):
        def build_evaluator(self, loaders, data, names):
            return RiggedScores(super().build_evaluator(loaders, data, names), by_epoch)

    return Rigged


class StopAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer, row):
        trainer.request_stop()


def _best_eligible(run_dir):
    with (run_dir / "results.csv").open() as handle:
        return [(row["best_eligible"], row["metrics/max_score"]) for row in csv.DictReader(handle)]


def test_best_skips_the_warm_up_and_degenerate_epochs_even_when_they_score_highest(tiny_demo, tmp_path, caplog):
    """Epoch 1 ends inside the warm-up (2 of 3 epochs) and epoch 2 is degenerate (top score 0.012): both carry
    a higher fitness than epoch 3, which is the best, best_stop_aug and patience's best. A run stopped after
    epoch 1 and resumed decides the same."""
    by_epoch = {1: (0.9, 0.9), 2: (0.6, 0.012), 3: (0.3, 0.8)}  # epoch: (fitness, highest score)
    rigged = rigged_experiment(by_epoch)
    opts = tiny_train_options(
        tiny_demo, tmp_path, epochs=3, warmup_epochs=2.0, close_mosaic=3, patience=1, max_steps_per_epoch=3
    )
    with caplog.at_level(logging.INFO, logger="accelyolo"):
        straight = fit(experiment=rigged, **{**opts, "name": "straight"})
    # patience 1 would have stopped after epoch 2 had epoch 1 been taken as best
    assert straight.epochs_completed == 3 and straight.best_epoch == 3
    assert straight.metrics["fitness"] == pytest.approx(0.3)
    weights = straight.run_dir / "weights"
    for name in ("best", "best_stop_aug"):
        meta = read_checkpoint_metadata(weights / f"{name}.safetensors")
        assert meta["epoch"] == 3 and meta["best_epoch"] == 3 and meta["best_stop_aug_epoch"] == 3, name
    assert _best_eligible(straight.run_dir) == [("0", "0.9"), ("0", "0.012"), ("1", "0.8")]
    said = [r.getMessage() for r in caplog.records if "not eligible for best" in r.getMessage()]
    assert said[0] == "epoch 1: not eligible for best: validated before the warm-up ended"
    assert said[1].startswith("epoch 2: not eligible for best: its highest score on the validation set, 0.012,")

    stopped = fit(experiment=rigged, callbacks=[StopAfterFirstEpoch()], **{**opts, "name": "stopped"})
    assert stopped.epochs_completed == 1 and stopped.best_epoch == 1  # nothing eligible yet: the last epoch
    resumed = fit(experiment=rigged, resume=str(stopped.last_checkpoint))
    assert read_checkpoint_metadata(resumed.best_checkpoint)["epoch"] == 3
    assert (resumed.best_epoch, resumed.metrics) == (straight.best_epoch, straight.metrics)
    assert _best_eligible(resumed.run_dir) == _best_eligible(straight.run_dir)


def test_without_an_eligible_epoch_best_is_the_last_epochs_model(tiny_demo, tmp_path, caplog):
    """The tiny model scores far below predict's conf at every epoch: best is the last epoch, and the log says why."""
    with caplog.at_level(logging.INFO, logger="accelyolo"):
        result = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=2, max_steps_per_epoch=2))
    assert [eligible for eligible, _ in _best_eligible(result.run_dir)] == ["0", "0"]
    assert all(float(score) < PREDICT_CONF for _, score in _best_eligible(result.run_dir))
    assert result.best_epoch == 2 and result.best_checkpoint is not None
    assert read_checkpoint_metadata(result.best_checkpoint)["epoch"] == 2
    assert result.metrics == read_checkpoint_metadata(result.last_checkpoint)["metrics"]
    assert "best.safetensors is the last epoch's model (epoch 2)" in caplog.text
