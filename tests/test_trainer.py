"""The training loop in one process: run folder, checkpoints, exact resume, transfer, non-finite loss."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import accelyolo
from accelyolo.commands.fit import fit
from accelyolo.core.config import ConfigError
from accelyolo.losses import Objective
from accelyolo.training.callbacks import Callback, write_results_csv
from accelyolo.training.experiment import Experiment
from accelyolo.training.trainer import NonFiniteLossError, Trainer
from accelyolo.weights.checkpoint import read_checkpoint_metadata
from tests.conftest import TINY_ANCHOR_FREE, tiny_train_options

REPO = Path(__file__).resolve().parents[1]


class RecordSteps(Callback):
    """Keeps every step's loss items and LRs; can stop the run after a given epoch."""

    def __init__(self, stop_after_epoch: int | None = None) -> None:
        self.steps = []
        self.stop_after_epoch = stop_after_epoch

    def on_step_end(self, trainer, step):
        self.steps.append((step.epoch, step.batch, list(step.losses.values()), step.lrs))

    def on_epoch_end(self, trainer, row):
        if self.stop_after_epoch is not None and row["epoch"] == self.stop_after_epoch:
            trainer.request_stop()


def test_fit_writes_the_run_folder(tiny_demo, tmp_path):
    result = fit(**tiny_train_options(tiny_demo, tmp_path, plots=True))
    run = result.run_dir
    assert run == tmp_path / "exp"
    for name in (
        "args.yaml",
        "results.csv",
        "labels.png",
        "train_batch0.png",
        "PR_curve.png",
        "confusion_matrix.png",
        "weights/last.safetensors",
        "weights/best.safetensors",
        "weights/inference.safetensors",
    ):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {
        "train/box_loss",
        "train/cls_loss",
        "train/dfl_loss",
        "metrics/mAP50",
        "metrics/mAP50-95",
        "lr/pg0",
        "lr/pg1",
        "lr/pg2",
    } <= set(rows[0])
    assert result.epochs_completed == 2 and result.best_epoch in (1, 2)
    assert set(result.metrics) >= {"precision", "recall", "mAP50", "mAP50-95", "fitness"}

    with safe_open(str(run / "weights" / "last.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("model.") for k in keys) and any(k.startswith("ema.") for k in keys)
    assert any(k.startswith("optimizer.state.") for k in keys)
    with safe_open(str(run / "weights" / "inference.safetensors"), "pt") as f:
        assert not any(k.startswith("optimizer.") for k in f.keys())  # noqa: SIM118

    model, meta = accelyolo.load_checkpoint(str(run / "weights" / "inference.safetensors"))
    assert meta["names"] == ["circle", "square", "triangle", "cross"] and model.nc == 4
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    out = out[0] if isinstance(out, (tuple, list)) else out
    assert out.shape[0] == 1 and out.shape[-1] == 4 + model.nc

    second = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=1))
    assert second.run_dir == tmp_path / "exp2"  # incremented, the first run is untouched


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_exact(tiny_demo, tmp_path, workers):
    """A run stopped after epoch 1 and resumed takes, step for step, the losses of one never stopped."""
    opts = tiny_train_options(
        tiny_demo,
        tmp_path,
        epochs=3,
        workers=workers,
        warmup_epochs=1.0,
        warmup_min_iters=4,
        close_mosaic=1,
        batch_size=4,
        max_steps_per_epoch=6,
    )
    straight = RecordSteps()
    fit(callbacks=[straight], **{**opts, "name": "straight"})

    first = RecordSteps(stop_after_epoch=1)
    stopped = fit(callbacks=[first], **{**opts, "name": "stopped"})
    assert stopped.epochs_completed == 1
    second = RecordSteps()
    resumed = fit(callbacks=[second], resume=str(stopped.last_checkpoint))
    assert resumed.run_dir == stopped.run_dir
    assert len(straight.steps) == 18
    assert first.steps + second.steps == straight.steps  # losses and LRs, bitwise
    rows = list(csv.DictReader((stopped.run_dir / "results.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]


def test_resume_finished_run_and_extend(tiny_demo, tmp_path, caplog):
    done = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=1))
    again = fit(resume=str(done.last_checkpoint))
    assert again.epochs_completed == 1
    assert again.metrics == done.metrics and again.best_epoch == done.best_epoch
    assert "already finished 1 epochs of 1" in caplog.text
    longer = fit(resume=str(done.last_checkpoint), epochs=2)
    assert longer.epochs_completed == 2
    with pytest.raises(ConfigError, match="cannot change: lr0"):
        fit(resume=str(done.last_checkpoint), lr0=0.5)
    auto = fit(resume="auto", project=str(tmp_path), epochs=2)  # newest last.safetensors under project
    assert auto.run_dir == done.run_dir


# Run in a child process: fit() whose trainer dies by SIGKILL (no handler, no `finally`, nothing flushed) the
# instant epoch 1's checkpoint is committed, before results.csv gets epoch 1's row; one thread, as the test runs.
KILLED_AFTER_THE_CHECKPOINT = """
import json, os, signal, sys
import torch
from accelyolo.commands.fit import fit
from accelyolo.training.trainer import Trainer

class KilledAfterTheCheckpoint(Trainer):
    def save(self, epoch, improved):
        super().save(epoch, improved)
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

torch.set_num_threads(1)
fit(trainer_class=KilledAfterTheCheckpoint, **json.loads(sys.argv[1]))
"""


def _csv_rows(run_dir) -> list[dict[str, str]]:
    with (run_dir / "results.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_kill_right_after_the_checkpoint_loses_no_results_row(tiny_demo, tmp_path, one_thread):
    """results.csv after a SIGKILL between epoch 1's checkpoint and its row, then --resume: every epoch's row
    once, the same as an uninterrupted run's (the rows travel in the checkpoint; a resume rewrites the file)."""
    opts = tiny_train_options(tiny_demo, tmp_path, epochs=2, max_steps_per_epoch=2)
    reference = fit(**{**opts, "name": "reference"})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_THE_CHECKPOINT, json.dumps({**opts, "name": "killed"})],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    run = tmp_path / "killed"
    assert read_checkpoint_metadata(run / "weights" / "last.safetensors")["epoch"] == 1
    assert not (run / "results.csv").exists()  # epoch 1's row died with the process
    resumed = fit(resume=str(run / "weights" / "last.safetensors"))
    assert resumed.run_dir == run and resumed.epochs_completed == 2
    rows, expected = _csv_rows(run), _csv_rows(reference.run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == list(expected[0])  # the same columns, in the same order
    for row, want in zip(rows, expected, strict=True):  # every loss, metric and LR, as written
        assert {k: v for k, v in row.items() if k != "time_s"} == {k: v for k, v in want.items() if k != "time_s"}
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_results_csv_is_rewritten_from_the_checkpoint_rows(tmp_path):
    """A resume's rewrite: the checkpoint's rows, formatted as the logger writes them; a bundle from before
    the rows were saved keeps the file's own rows up to its epoch (a torn last line goes too)."""
    path = tmp_path / "results.csv"
    rows = [{"epoch": e, "train/box_loss": 1 / e, "metrics/mAP50": None if e % 2 else 0.25} for e in (1, 2, 3)]
    path.write_text("epoch,train/box_loss,metrics/mAP50\r\n2,0.5,0.25\r\n2,0.5,0.25\r\n3,0.3")
    write_results_csv(path, rows, 2)
    assert path.read_bytes() == b"epoch,train/box_loss,metrics/mAP50\r\n1,1,\r\n2,0.5,0.25\r\n"  # %.6g
    path.write_text("epoch,train/box_loss\r\n1,1.0\r\n2,0.5\r\n3,0.333333\r\n4,0.2")
    write_results_csv(path, [], 3)
    assert path.read_bytes() == b"epoch,train/box_loss\r\n1,1.0\r\n2,0.5\r\n3,0.333333\r\n"


def test_weights_transfer_to_another_class_count(tiny_demo, tmp_path, capsys, caplog):
    from accelyolo.weights.checkpoint import load_checkpoint_bundle

    caplog.set_level(logging.INFO, logger="accelyolo")
    done = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=1))
    # lr0 0: the transferred parameters must come out of the second run exactly as they went in
    single = fit(
        **tiny_train_options(
            tiny_demo, tmp_path, epochs=1, single_cls=True, optimizer="SGD", lr0=0.0, weights=str(done.last_checkpoint)
        )
    )
    source = load_checkpoint_bundle(done.last_checkpoint)
    source_state = source.ema_state or source.model_state
    target_state = load_checkpoint_bundle(single.last_checkpoint).model_state
    matching = [k for k, v in target_state.items() if k in source_state and source_state[k].shape == v.shape]
    # everything but the class-dependent head tensors (4 classes -> 1)
    assert 0 < len(matching) < len(target_state)
    reported = re.findall(r"transferred (\d+)/(\d+)", capsys.readouterr().out + caplog.text)
    assert reported and {(int(a), int(b)) for a, b in reported} == {(len(matching), len(target_state))}
    trained, _ = accelyolo.load_checkpoint(str(single.last_checkpoint), prefer_ema=False)
    for name, value in trained.named_parameters():
        if name in matching:
            assert torch.equal(value, source_state[name]), name


class PoisonedLossExperiment(Experiment):
    """An experiment whose loss turns NaN after the first epoch (12 batches): the objective seam, no monkeypatching."""

    def build_objective(self, model, data, names):
        real = super().build_objective(model, data, names)

        class Poisoned(Objective):
            names = real.names
            calls = 0

            def run(self, model, batch, images):
                total, items, preds = real.run(model, batch, images)
                Poisoned.calls += 1
                if Poisoned.calls > 12:
                    total = total * float("nan")
                return total, items, preds

        return Poisoned()


def test_nonfinite_losses_stop_with_last_checkpoint_intact(tiny_demo, tmp_path):
    opts = tiny_train_options(tiny_demo, tmp_path, epochs=3, batch_size=4)
    with pytest.raises(NonFiniteLossError, match="10 non-finite losses in a row"):
        fit(experiment=PoisonedLossExperiment, **opts)
    model, meta = accelyolo.load_checkpoint(str(tmp_path / "exp" / "weights" / "last.safetensors"))
    assert meta["epoch"] == 1  # epochs completed, 1-based like everything a person reads
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_multi_scale_save_period_patience_ram_cache_adamw_cosine(tiny_demo, tmp_path):
    sizes = []

    class Sizes(Callback):
        def on_step_end(self, trainer, step):
            sizes.append(step.image_size)

    result = fit(
        callbacks=[Sizes()],
        **tiny_train_options(
            tiny_demo,
            tmp_path,
            epochs=4,
            multi_scale=True,
            save_period=2,
            patience=1,
            val_interval=1,
            cache="ram",
            optimizer="AdamW",
            cos_lr=True,
            lr0=1e-9,
            best_min_score=0.0,  # the tiny model scores below predict's conf: let patience count from epoch 1
        ),
    )
    assert len(set(sizes)) > 1 and all(s % 32 == 0 and 32 <= s <= 96 for s in sizes)  # 64 px +/- 50%
    weights = result.run_dir / "weights"
    assert (weights / "epoch2.safetensors").is_file()
    # lr0 1e-9 cannot improve on epoch 1, so patience 1 stops the run after epoch 2
    assert result.stopped_early and result.epochs_completed == 2


def test_frozen_layers_do_not_change(tiny_demo, tmp_path):
    from accelyolo.families import build_model

    result = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=1, freeze=2, lr0=0.05, weight_decay=0.0))
    trained, _ = accelyolo.load_checkpoint(str(result.last_checkpoint), prefer_ema=False)
    torch.manual_seed(0)  # the trainer seeds with seed 0 before building the model
    fresh = build_model(trained.config["name"], nc=trained.nc)
    after = dict(trained.named_parameters())
    moved = {n for n, p in fresh.named_parameters() if not torch.equal(p, after[n])}
    assert not any(n.startswith(("backbone.stages.0.", "backbone.stages.1.")) for n in moved)
    assert any(n.startswith("head.") for n in moved)


def test_bf16_mixed_precision_runs_on_cpu(tiny_demo, tmp_path):
    from accelyolo.families import build_model
    from accelyolo.weights.checkpoint import load_checkpoint_bundle, save_checkpoint

    initial = build_model(TINY_ANCHOR_FREE, nc=4)  # known starting weights, passed in as `weights`
    start = save_checkpoint(tmp_path / "start.safetensors", model_state=initial.state_dict())
    result = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=2, mixed_precision="bf16", weights=str(start)))
    losses = [v for row in result.history for k, v in row.items() if k.startswith("train/") and k.endswith("_loss")]
    assert len(losses) == 2 * 3 and all(math.isfinite(v) for v in losses)  # box, cls, dfl per epoch
    rows = list(csv.DictReader((result.run_dir / "results.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(math.isfinite(float(r[k])) for r in rows for k in r if k.endswith("_loss"))
    trained = load_checkpoint_bundle(result.last_checkpoint).model_state
    before = initial.state_dict()
    assert all(torch.isfinite(v).all() for v in trained.values() if v.is_floating_point())
    changed = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, trained[k])]
    assert len(changed) > len(before) // 2  # trained, not just loaded


def _tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of every TensorBoard event file under `folder`: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.rglob("*tfevents*")):
        events = EventAccumulator(str(path))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return scalars


def test_tensorboard_tracker_gets_the_epoch_scalars(tiny_demo, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.chdir(tmp_path)  # wherever the event files go, they stay inside tmp_path
    result = fit(**tiny_train_options(tiny_demo, tmp_path / "runs", epochs=2, log_with="tensorboard"))
    scalars = _tensorboard_scalars(tmp_path)
    for tag in ("train/box_loss", "train/cls_loss", "metrics/mAP50", "metrics/mAP50-95"):
        assert [step for step, _ in scalars.get(tag, [])] == [1, 2], (tag, sorted(scalars))
        expected = [row[tag] for row in result.history]
        assert [value for _, value in scalars[tag]] == pytest.approx(expected, rel=1e-6, abs=1e-7), tag


def test_trackers_are_used_only_when_installed(tiny_demo, tmp_path, caplog, monkeypatch):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: False)  # as if not installed
    result = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=1, log_with="tensorboard"))
    assert result.last_checkpoint.is_file()
    assert "tracker 'tensorboard' is not installed" in caplog.text
    assert not list(tmp_path.rglob("*tfevents*"))
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbored'"):
        fit(**tiny_train_options(tiny_demo, tmp_path, epochs=1, log_with="tensorbored"))


class EagerCompileTrainer(Trainer):
    """`--compile` with dynamo's 'eager' backend: the same wrapping and tracing, without inductor's minutes of
    code generation on a CPU."""

    compile_backend = "eager"


class RecordCompiled(Callback):
    def on_fit_start(self, trainer):
        from accelerate.utils import is_compiled_module

        self.compiled = is_compiled_module(trainer.model)


def test_compile_trains_and_saves_plain_names(tiny_demo, tmp_path, one_thread):
    recorder = RecordCompiled()
    options = tiny_train_options(tiny_demo, tmp_path, compile=True, epochs=1, max_steps_per_epoch=2)
    result = fit(trainer_class=EagerCompileTrainer, callbacks=[recorder], **options)
    assert recorder.compiled
    with safe_open(str(result.last_checkpoint), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("model.") for k in keys)
    assert not any("_orig_mod" in k for k in keys)  # torch.compile's wrapper never reaches the checkpoint
    model, _ = accelyolo.load_checkpoint(str(result.inference_checkpoint))
    assert model.nc == 4


def test_compile_is_a_boolean_option():
    from accelyolo.core.config import load_config

    assert load_config(None).compile is False
    assert load_config(None, compile=True).compile is True
    with pytest.raises(ConfigError, match="compile"):
        load_config(None, compile="sometimes")


def test_loader_workers_change_nothing_in_a_run(tiny_demo, tmp_path, monkeypatch):
    """Two loader workers (reused shared-memory batches, validation workers forked before the first step and
    their early batches dropped at the first validation, each next epoch's batches started while the last
    batch and the validation run, the mosaic switched off in one of those) train and validate exactly as
    the main process alone."""
    import accelyolo.training.trainer as trainer_module

    started = []

    def spy(loader):
        started.append(trainer_module.start_next_pass.__wrapped__(loader))
        return started[-1]

    spy.__wrapped__ = trainer_module.start_next_pass
    monkeypatch.setattr(trainer_module, "start_next_pass", spy)
    runs = {}
    for workers in (0, 2):
        started.clear()
        result = fit(**tiny_train_options(tiny_demo, tmp_path / f"w{workers}", epochs=3, workers=workers,
                                          close_mosaic=1))  # fmt: skip
        runs[workers] = [
            {k: v for k, v in row.items() if k != "time_s"} for row in result.history
        ]  # every loss, metric and learning rate of every epoch
        assert started == [workers > 0] * 2  # epochs 2 and 3 (mosaic off) loaded ahead with workers only
    assert runs[2] == runs[0]
    assert runs[0][-1]["metrics/mAP50-95"] is not None
