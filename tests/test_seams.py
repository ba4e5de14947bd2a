"""The trainer's seams: parts replaced by subclass or by `fit(parts=...)`, the step record, the run state,
the scheduler object, a run closed however it ends, stops decided on one rank."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from accelyolo.commands.fit import fit
from accelyolo.families import build_loss
from accelyolo.losses import Objective
from accelyolo.training.callbacks import Callback
from accelyolo.training.experiment import Experiment
from accelyolo.training.records import RunData
from accelyolo.training.trainer import RunState, StepOutput
from accelyolo.weights.checkpoint import load_checkpoint_bundle, read_checkpoint_metadata
from tests.conftest import tiny_train_options
from tests.test_distributed import launch_args, run

pytestmark = pytest.mark.usefixtures("one_thread")


class Record(Callback):
    def __init__(self):
        self.steps: list[StepOutput] = []
        self.closed = 0

    def on_step_end(self, trainer, step):
        self.steps.append(step)

    def close(self, trainer):
        self.closed += 1


class CountingLoss(torch.nn.Module):
    """The family's loss, counting its calls: proof that the part given to fit() is the one used."""

    def __init__(self, model):
        super().__init__()
        self.inner = build_loss(model, imgsz=64)
        self.names = self.inner.names
        self.calls = 0

    def forward(self, preds, targets):
        self.calls += 1
        return self.inner(preds, targets)


def test_an_experiment_replaces_the_loss(tiny_demo, tmp_path):
    """A plain detection loss `(preds, targets)` returned by `build_objective` is wrapped as the objective."""
    made = []

    class OwnLoss(Experiment):
        def build_objective(self, model, data, names):
            made.append(CountingLoss(model))
            return made[-1]

    record = Record()
    fit(callbacks=[record], experiment=OwnLoss, **tiny_train_options(tiny_demo, tmp_path, epochs=1))
    assert len(made) == 1 and made[0].calls == len(record.steps) == 6
    step = record.steps[0]
    assert isinstance(step, StepOutput) and step.epoch == 1 and step.batch == 0 and step.iteration == 0
    assert set(step.losses) == {"box", "cls", "dfl"} and step.finite
    assert [s.optimizer_step for s in record.steps] == [False] * 5 + [True]  # accumulate 8; the epoch's end
    assert step.image_size == 64 and step.batch_size == 8 and step.step_time_s > 0 and len(step.lrs) == 3
    assert [s.iteration for s in record.steps] == list(range(6))
    assert record.closed == 1


class Boom(Callback):
    def __init__(self, error: BaseException):
        self.error = error

    def on_step_end(self, trainer, step):
        if step.batch == 2:
            raise self.error


@pytest.mark.parametrize("error", [RuntimeError("callback failed"), KeyboardInterrupt()])
def test_the_run_is_closed_however_it_ends(tiny_demo, tmp_path, error):
    record = Record()
    with pytest.raises(type(error)):
        fit(callbacks=[record, Boom(error)], **tiny_train_options(tiny_demo, tmp_path, epochs=1))
    assert record.closed == 1  # every callback's close ran: the progress display is stopped the same way


def test_a_run_that_fails_before_training_leaves_no_run_folder(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        fit(data=None, model="yolov9z", imgsz=64, epochs=1, workers=0, project=str(tmp_path), plots=False)
    assert not (tmp_path / "exp").exists()


def test_checkpoint_holds_run_state_and_scheduler_state(tiny_demo, tmp_path):
    # best_min_score 0: the tiny model scores far below predict's conf; the best epoch's state is what is checked
    opts = tiny_train_options(tiny_demo, tmp_path, epochs=2, warmup_epochs=1.0, warmup_min_iters=4, nbs=8)
    result = fit(**opts, best_min_score=0.0)
    meta = read_checkpoint_metadata(result.last_checkpoint)
    state = RunState.from_metadata(meta)
    assert state.epoch == 2 == result.epochs_completed and state.best_epoch == result.best_epoch >= 1
    assert state.global_step == 12 and state.ema_updates == 12  # nbs 8 = batch 8: a step every batch
    assert meta["scheduler"]["last_epoch"] == 12  # one scheduler step per optimizer step
    assert json.loads(json.dumps(meta["scheduler"])) == meta["scheduler"]


def test_a_torch_scheduler_from_the_recipe_resumes_exactly(tiny_demo, tmp_path):
    opts = tiny_train_options(
        tiny_demo, tmp_path, epochs=3, scheduler="OneCycleLR", scheduler_args={"pct_start": 0.3}, nbs=8
    )

    class StopAfterFirst(Record):
        def on_epoch_end(self, trainer, row):
            trainer.request_stop()

    straight = Record()
    fit(callbacks=[straight], **{**opts, "name": "straight"})
    first = StopAfterFirst()
    stopped = fit(callbacks=[first], **{**opts, "name": "stopped"})
    assert read_checkpoint_metadata(stopped.last_checkpoint)["scheduler"]["total_steps"] == 18
    second = Record()
    fit(callbacks=[second], resume=str(stopped.last_checkpoint))
    lrs = [s.lrs for s in first.steps + second.steps]
    assert lrs == [s.lrs for s in straight.steps]
    assert max(max(x) for x in lrs) > 5 * lrs[0][0]  # the one-cycle ramp, not a constant


def test_fit_twice_in_one_process_with_other_precision(tiny_demo, tmp_path):
    """Accelerate refuses a second Accelerator with other settings in one process unless its state is
    reset (`trainer.fresh_accelerator`, the one place that touches Accelerate's private state)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    Accelerator(mixed_precision="no")
    with pytest.raises(ValueError, match="already been initialized"):
        Accelerator(mixed_precision="bf16")
    AcceleratorState._reset_state(reset_partial_state=False)
    first = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=1, mixed_precision="no"))
    second = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=1, mixed_precision="bf16"))
    assert first.epochs_completed == second.epochs_completed == 1


def test_run_state_reads_format_1_epochs():
    old = {"epoch": 0, "best_epoch": 0, "best_fitness": 0.5, "global_step": 7, "ema_updates": 7}
    state = RunState.from_metadata(old, format_version=1)
    assert (state.epoch, state.best_epoch, state.global_step) == (1, 1, 7)
    assert RunState.from_metadata(state.to_metadata()) == state


SCRIPT = """
import json, sys
import accelyolo
from accelyolo.training.callbacks import Callback

class Watch(Callback):
    def __init__(self):
        self.lrs = []
    def on_step_end(self, trainer, step):
        self.lrs.append(step.lrs)
        if STOP_AT is not None and trainer.accelerator.process_index == 1 and step.iteration == STOP_AT:
            trainer.request_stop()  # asked on rank 1 only

watch = Watch()
result = accelyolo.fit(callbacks=[watch], **OPTIONS)
rank = __import__("accelerate").PartialState().process_index
out = {"rank": rank, "steps": len(watch.lrs), "lrs": watch.lrs, "epochs": result.epochs_completed}
open(OUT.format(rank=rank), "w").write(json.dumps(out))
"""


def _script(tmp_path, name, options, stop_at=None):
    path = tmp_path / f"{name}.py"
    out = str(tmp_path / f"{name}-{{rank}}.json")
    path.write_text(
        textwrap.dedent(SCRIPT)
        .replace("OPTIONS", repr(options))
        .replace("STOP_AT", repr(stop_at))
        .replace("OUT", repr(out))
    )
    return str(path)


def _read(tmp_path, name, rank):
    return json.loads((tmp_path / f"{name}-{rank}.json").read_text())


@pytest.mark.slow
def test_ddp_stop_on_one_rank_and_lr_sequence(tiny_demo, tmp_path):
    """A stop asked on rank 1 only ends both ranks after the same step; and the LR of every step under
    2 processes x batch 4 equals the one of 1 process x batch 8 (the scheduler is not stepped per process)."""
    base = tiny_train_options(
        tiny_demo, tmp_path, epochs=2, batch_size=4, warmup_epochs=1.0, warmup_min_iters=4, nbs=16
    )
    run(launch_args(2) + [_script(tmp_path, "stop", {**base, "name": "stop"}, stop_at=3)])
    ranks = [_read(tmp_path, "stop", r) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4 and ranks[0]["epochs"] == 0

    run(launch_args(2) + [_script(tmp_path, "two", {**base, "name": "two"})])
    run(launch_args(1) + [_script(tmp_path, "one", {**base, "name": "one", "batch_size": 8})])
    two, one = _read(tmp_path, "two", 0), _read(tmp_path, "one", 0)
    assert two["steps"] == one["steps"] == 12
    assert two["lrs"] == one["lrs"]


def test_optimizer_auto_is_resolved_and_recorded(tiny_demo, tmp_path):
    """The default `optimizer: auto` becomes AdamW at the rule's lr0 for a short run; what args.yaml and the
    checkpoint record is the resolved choice (so a resume rebuilds the same); an explicit choice is kept."""
    import yaml

    auto = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=1, name="auto"))
    recorded = yaml.safe_load((auto.run_dir / "args.yaml").read_text())
    assert recorded["optimizer"] == "AdamW" and recorded["momentum"] == 0.9 and recorded["warmup_bias_lr"] == 0.0
    assert recorded["lr0"] == 0.002
    config = read_checkpoint_metadata(auto.last_checkpoint)["config"]
    assert config["optimizer"] == "AdamW" and config["lr0"] == recorded["lr0"]
    sgd = fit(**tiny_train_options(tiny_demo, tmp_path, epochs=1, name="sgd", optimizer="SGD"))
    recorded = yaml.safe_load((sgd.run_dir / "args.yaml").read_text())
    assert recorded["optimizer"] == "SGD" and recorded["lr0"] == 0.01


def test_datasets_an_experiment_builds_name_the_classes(tiny_demo, tmp_path):
    """An experiment's own `build_datasets` (no data.yaml read); the model, evaluator and checkpoint still get
    the classes, from the datasets it built."""
    from accelyolo.data import YoloDataset, load_data_yaml

    spec = load_data_yaml(tiny_demo)
    names = [f"shape{i}" for i in range(len(spec.names))]

    class OwnData(Experiment):
        def build_datasets(self):
            common = dict(imgsz=64, names=names, stride=32, seed=0)
            train = YoloDataset(spec.splits["train"], augment=True, hyp=self.cfg.hyp(), batch_size=8, **common)
            return RunData(train, YoloDataset(spec.splits["val"], augment=False, hyp=None, batch_size=8, **common))

    result = fit(experiment=OwnData, **tiny_train_options(tiny_demo, tmp_path, epochs=1))
    assert read_checkpoint_metadata(result.last_checkpoint)["names"] == names
    assert result.epochs_completed == 1


def test_datasets_without_class_names_are_refused(tiny_demo, tmp_path):
    from accelyolo.core.config import ConfigError

    class Unnamed(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            raise AssertionError("never read")

    class UnnamedData(Experiment):
        def build_datasets(self):
            return RunData(Unnamed(), Unnamed())

    with pytest.raises(ConfigError, match=r"Unnamed\) has no class names.*returned by build_datasets"):
        fit(experiment=UnnamedData, **tiny_train_options(tiny_demo, tmp_path, epochs=1))
    assert not (tmp_path / "exp").exists()


class WithL2(Objective):
    """The README's example: the run's own objective plus an explicit L2 penalty, as its own loss column."""

    def __init__(self, inner, weight=1e-5):
        self.inner, self.weight = inner, weight
        self.names = (*inner.names, "l2")

    def run(self, model, batch, images):
        total, items, preds = self.inner.run(model, batch, images)
        l2 = self.weight * sum(p.pow(2).sum() for p in model.parameters())
        return total + l2 * images.shape[0], torch.cat((items, l2.detach().reshape(1))), preds


@pytest.mark.parametrize("segment", [False, True])
def test_an_objective_wrapping_the_runs_own_stacks_with_any_task(tiny_demo, tmp_path, segment):
    """An experiment whose objective wraps the one `super()` builds: its term is added to the detection (or,
    combined with the multi-task experiment, detection + segmentation) objective and shows as a column."""
    data = tiny_demo.with_name("data-multitask.yaml") if segment else tiny_demo
    record = Record()

    class L2Experiment(Experiment):
        def build_objective(self, model, data, names):
            return WithL2(super().build_objective(model, data, names))

    opts = tiny_train_options(data, tmp_path, epochs=1, segment=segment, max_steps_per_epoch=2)
    result = fit(callbacks=[record], experiment=L2Experiment, **opts)
    names = ["box", "cls", "dfl"] + (["seg"] if segment else []) + ["l2"]
    assert [list(s.losses) for s in record.steps] == [names] * 2
    assert all(s.losses["l2"] > 0 for s in record.steps)
    with (result.run_dir / "results.csv").open() as handle:
        assert "train/l2_loss" in handle.readline().split(",")


class Counting(Objective):
    """The run's own objective plus state of its own: the steps it ran, saved in the bundle's extra section
    (`extra_state`), taken back on resume, and the epochs and the close the loop tells it about."""

    def __init__(self, inner, log):
        self.inner, self.names, self.log = inner, inner.names, log
        self.steps = torch.zeros((), dtype=torch.int64)

    def run(self, model, batch, images):
        self.steps += 1
        return self.inner.run(model, batch, images)

    def prepare(self, accelerator, model):
        self.log.append(("prepared", type(model).__name__))

    def start_epoch(self, epoch, epochs):
        self.log.append(("epoch", epoch, epochs))

    def extra_state(self):
        return {"counting_steps": self.steps.clone()}

    def load_extra_state(self, state, source):
        self.log.append(("loaded", int(state["counting_steps"]), source.name))
        self.steps = state["counting_steps"].clone()

    def close(self):
        self.log.append(("closed", int(self.steps)))


def test_an_objective_with_state_of_its_own_is_told_the_epochs_saved_restored_and_closed(tiny_demo, tmp_path):
    """The objective hooks the loop calls (what distillation's adapters, weight and neck hook go through): it is
    told the prepared (unwrapped) model, each epoch starts with `start_epoch`, `extra_state` goes into every
    bundle, a resumed run hands it back to `load_extra_state` and continues from it, and the run ends with
    `close`."""
    log = []

    class CountingExperiment(Experiment):
        def build_objective(self, model, data, names):
            return Counting(super().build_objective(model, data, names), log)

    opts = tiny_train_options(tiny_demo, tmp_path, epochs=2, max_steps_per_epoch=2)
    fit(experiment=CountingExperiment, **{**opts, "epochs": 1})
    assert log == [("prepared", "YOLO"), ("epoch", 1, 1), ("closed", 2)]
    log.clear()
    last = str(tmp_path / "exp" / "weights" / "last.safetensors")
    result = fit(experiment=CountingExperiment, resume=last, epochs=2)
    assert log == [("prepared", "YOLO"), ("loaded", 2, "last.safetensors"), ("epoch", 2, 2), ("closed", 4)]
    assert int(load_checkpoint_bundle(result.last_checkpoint).extra_state["counting_steps"]) == 4


def test_the_one_way_to_replace_a_part_is_an_experiment():
    """`fit(parts=...)` is refused with the new way in its message; `experiment=` takes an `Experiment`
    subclass only; the options' features combine with it, the user's class outermost and none twice."""
    from accelyolo.commands.fit import experiment_class
    from accelyolo.core.config import ConfigError, load_config
    from accelyolo.tasks.distill import DistillExperiment
    from accelyolo.tasks.multitask import MultiTaskExperiment

    with pytest.raises(TypeError, match=r"subclass accelyolo\.Experiment.*fit\(experiment=YourExperiment\)"):
        fit(parts=object())
    with pytest.raises(ConfigError, match="'experiment' must be a subclass of accelyolo.Experiment"):
        fit("demo", experiment=object)

    class Mine(Experiment):
        pass

    cfg = load_config(segment=True, teacher="t.safetensors")
    combined = experiment_class(cfg, Mine)
    assert combined.__mro__[1:4] == (Mine, DistillExperiment, MultiTaskExperiment)
    assert combined.__name__ == "MineDistillMultiTaskExperiment"

    class MyDistill(DistillExperiment):
        pass

    assert experiment_class(cfg, MyDistill).__mro__[1:3] == (MyDistill, DistillExperiment)
    assert MultiTaskExperiment in experiment_class(cfg, MyDistill).__mro__

    class MyMultiTask(MultiTaskExperiment):  # the user inherits the inner feature: distillation still wraps it
        pass

    mro = experiment_class(cfg, MyMultiTask).__mro__
    assert mro[1:4] == (DistillExperiment, MyMultiTask, MultiTaskExperiment), mro
    assert experiment_class(load_config(segment=True), MyMultiTask) is MyMultiTask
    assert experiment_class(load_config()) is Experiment and experiment_class(load_config(), Mine) is Mine
