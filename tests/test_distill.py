"""Knowledge distillation: the terms, the frozen teacher, the student's checkpoint, exact resume, DDP."""

from __future__ import annotations

import csv
import json
import math
import textwrap

import pytest
import torch
from safetensors import safe_open

from accelyolo.commands.fit import fit
from accelyolo.core.config import ConfigError
from accelyolo.data.demo import DEMO_NAMES
from accelyolo.families import build_model
from accelyolo.tasks.distill import (
    DistillExperiment,
    distill_weight_at,
    distillation_terms,
    load_teacher,
    teacher_outputs,
)
from accelyolo.training.callbacks import Callback
from accelyolo.training.experiment import Experiment
from accelyolo.weights.checkpoint import load_checkpoint_bundle, save_checkpoint
from tests.conftest import TINY_ANCHOR_BASED, TINY_ANCHOR_FREE, tiny_train_options
from tests.test_distributed import launch_args, run

pytestmark = pytest.mark.usefixtures("one_thread")


def write_teacher(path, name="yolov8n", names=DEMO_NAMES, seed=1, **extra):
    """A teacher bundle of `name` whose BatchNorm statistics are not the defaults (so that a change shows)."""
    torch.manual_seed(seed)
    model = build_model(name, nc=len(names), **extra)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    save_checkpoint(path, model_state=model.state_dict(), metadata={"model": model.config, "names": list(names)})
    return path


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    return write_teacher(tmp_path_factory.mktemp("teacher") / "teacher.safetensors")


def raw_outputs(model, images):
    """Raw head maps and neck features of a model in eval mode (how the trainer's teacher runs)."""
    return teacher_outputs(model, images)


@pytest.mark.parametrize("classes", [DEMO_NAMES, ("plate",)], ids=["classes", "one-class"])
@pytest.mark.parametrize("name", [TINY_ANCHOR_FREE, TINY_ANCHOR_BASED])
def test_terms_vanish_for_a_teacher_equal_to_the_student_and_grow_apart(tmp_path, name, classes):
    """Every term is 0 for a student equal to its teacher and positive apart, with one class too (where a
    softmax over the classes would make the class term 0 whatever the models predict)."""
    bundle = write_teacher(tmp_path / "t.safetensors", name=name, names=classes)
    teacher, names = load_teacher(bundle)
    assert names == list(classes) and not teacher.training
    student = build_model(name, nc=len(classes))
    student.load_state_dict(teacher.state_dict())
    student.eval()
    images = torch.rand(2, 3, 64, 64)
    s_maps, s_feats = raw_outputs(student, images)
    t_maps, t_feats = raw_outputs(teacher, images)
    terms = distillation_terms(student, s_maps, teacher, t_maps, 1.0, s_feats, t_feats)
    expected = {"cls", "box", "feat"} if name == TINY_ANCHOR_FREE else {"cls", "feat"}
    assert set(terms) == expected
    assert all(abs(float(v)) < 1e-6 for v in terms.values()), terms
    with torch.no_grad():  # another student: every term is positive
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    s_maps, s_feats = raw_outputs(student, images)
    terms = distillation_terms(student, s_maps, teacher, t_maps, 1.0, s_feats, t_feats)
    assert all(float(v) > 1e-4 for v in terms.values()), terms


def test_distill_weight_decays_by_a_cosine_to_zero():
    assert distill_weight_at(1, 10, 2.0) == 2.0
    assert distill_weight_at(6, 10, 2.0) == pytest.approx(1.0)
    assert distill_weight_at(11, 10, 2.0) == pytest.approx(0.0, abs=1e-12)
    values = [distill_weight_at(e, 10, 1.0) for e in range(1, 11)]
    assert values == sorted(values, reverse=True)


class TeacherWatch(Callback):
    """Snapshots the teacher's tensors at the start and after every epoch; records each step's losses."""

    def __init__(self):
        self.before = None
        self.after = []
        self.steps = []

    @staticmethod
    def snapshot(trainer):
        return {k: v.detach().clone() for k, v in trainer.loss_fn.teacher.state_dict().items()}

    def on_fit_start(self, trainer):
        self.before = self.snapshot(trainer)
        assert all(not p.requires_grad for p in trainer.loss_fn.teacher.parameters())

    def on_step_end(self, trainer, step):
        self.steps.append(dict(step.losses))
        assert all(p.grad is None for p in trainer.loss_fn.teacher.parameters())

    def on_epoch_end(self, trainer, row):
        self.after.append(self.snapshot(trainer))


def test_a_student_passed_as_a_part_is_distilled(tiny_demo, tmp_path, teacher_path):
    """The teacher belongs to the objective, not to `build_model`: a student built by a user's experiment is
    checked against it and distilled (the user's class combined with the distillation experiment), and the
    teacher is reachable through the run's objective."""
    watch = TeacherWatch()

    def given(student):
        class GivenStudent(Experiment):
            def build_model(self, data, names):
                return student

        return GivenStudent

    opts = tiny_train_options(tiny_demo, tmp_path, epochs=1, teacher=str(teacher_path))
    result = fit(callbacks=[watch], experiment=given(build_model(TINY_ANCHOR_FREE, nc=len(DEMO_NAMES))), **opts)
    assert result.epochs_completed == 1
    assert list(watch.steps[0]) == ["box", "cls", "dfl", "distill_cls", "distill_box"]
    assert watch.steps[0]["distill_cls"] > 0
    wrong = build_model(TINY_ANCHOR_FREE, nc=len(DEMO_NAMES) + 1)  # another class count than the teacher's
    with pytest.raises(ConfigError, match="class"):
        fit(experiment=given(wrong), **{**opts, "name": "wrong"})


def test_the_teacher_stays_frozen_and_never_reaches_the_student_checkpoint(tiny_demo, tmp_path, teacher_path):
    watch = TeacherWatch()
    opts = tiny_train_options(tiny_demo, tmp_path, epochs=2, teacher=str(teacher_path), distill_feat=True)
    result = fit(callbacks=[watch], **opts)
    # Bit-identical teacher parameters and BatchNorm buffers (running stats, batch counters) after each epoch.
    for snap in watch.after:
        assert snap.keys() == watch.before.keys()
        assert all(torch.equal(snap[k], watch.before[k]) for k in snap)
    # Each term is its own loss, in the steps and in results.csv; the weight decays between the epochs.
    names = ["box", "cls", "dfl", "distill_cls", "distill_box", "distill_feat"]
    assert list(watch.steps[0]) == names
    assert all(watch.steps[0][k] > 0 for k in names[3:])
    with (result.run_dir / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert all(f"train/{n}_loss" in rows[0] for n in names)
    assert 0 < float(rows[1]["train/distill_cls_loss"]) < float(rows[0]["train/distill_cls_loss"])
    # The student's bundle: the student's tensors, its EMA, its optimizer, the adapters; no teacher tensor.
    student = build_model(TINY_ANCHOR_FREE, nc=len(DEMO_NAMES))
    student_keys = set(student.state_dict())
    with safe_open(str(result.last_checkpoint), "pt") as handle:
        keys = list(handle.keys())
        shapes = {tuple(handle.get_slice(k).get_shape()) for k in keys}
    assert {k[len("model.") :] for k in keys if k.startswith("model.")} == student_keys
    assert {k.split(".")[0] for k in keys} <= {"model", "ema", "optimizer", "rng", "scaler", "extra"}
    extra = [k for k in keys if k.startswith("extra.")]
    assert extra and all(k.startswith("extra.distill_adapters.") for k in extra)
    teacher_state = load_checkpoint_bundle(teacher_path).model_state
    adapter_shapes = {
        tuple(v.shape) for v in load_checkpoint_bundle(result.last_checkpoint).extra_state["distill_adapters"].values()
    }
    teacher_only = (
        {tuple(v.shape) for v in teacher_state.values()}
        - {tuple(v.shape) for v in student.state_dict().values()}
        - adapter_shapes
    )
    assert teacher_only and not (shapes & teacher_only)
    assert not any(k.startswith("teacher") or ".teacher." in k for k in keys)
    # The teacher's path is in the recorded config (resume reads it from there).
    meta = load_checkpoint_bundle(result.last_checkpoint).metadata
    assert meta["config"]["teacher"] == str(teacher_path.resolve())


def test_resume_of_a_distillation_run_is_exact(tiny_demo, tmp_path, teacher_path):
    opts = tiny_train_options(tiny_demo, tmp_path, epochs=2, teacher=str(teacher_path), distill_feat=True)

    class StopAfterFirst(TeacherWatch):
        def on_epoch_end(self, trainer, row):
            trainer.request_stop()

    straight = TeacherWatch()
    whole = fit(callbacks=[straight], **{**opts, "name": "straight"})
    first = StopAfterFirst()
    stopped = fit(callbacks=[first], **{**opts, "name": "stopped"})
    second = TeacherWatch()
    resumed = fit(callbacks=[second], resume=str(stopped.last_checkpoint))
    assert isinstance(resumed, type(whole)) and resumed.epochs_completed == 2
    assert first.steps + second.steps == straight.steps
    a, b = load_checkpoint_bundle(whole.last_checkpoint), load_checkpoint_bundle(resumed.last_checkpoint)
    assert all(torch.equal(a.model_state[k], b.model_state[k]) for k in a.model_state)
    assert all(
        torch.equal(a.extra_state["distill_adapters"][k], b.extra_state["distill_adapters"][k])
        for k in a.extra_state["distill_adapters"]
    )


def test_fit_picks_the_distillation_trainer_only_with_a_teacher(tiny_demo, tmp_path, teacher_path):
    seen = []

    class Which(Callback):
        def on_fit_start(self, trainer):
            seen.append(type(trainer.experiment))
            trainer.request_stop()

    fit(callbacks=[Which()], **tiny_train_options(tiny_demo, tmp_path, epochs=1, name="plain"))
    fit(callbacks=[Which()], **tiny_train_options(tiny_demo, tmp_path, epochs=1, teacher=str(teacher_path)))
    assert seen[0] is Experiment and seen[1] is DistillExperiment


@pytest.mark.parametrize(
    "teacher, match",
    [
        (
            {"name": TINY_ANCHOR_BASED},
            "anchor_based model \\(yolov5t\\), which does not pair with the anchor_free "
            "student yolov8t; a student of yolov5\\* takes a teacher of yolov5\\*",
        ),
        ({"names": ("a", "b", "c")}, "must share the student's class list"),
        (None, "does not exist"),
    ],
)
def test_a_mismatched_teacher_is_refused_before_training(tiny_demo, tmp_path, teacher, match):
    path = tmp_path / "teacher.safetensors"
    if teacher is not None:
        write_teacher(path, **teacher)
    with pytest.raises(ConfigError, match=match):
        fit(**tiny_train_options(tiny_demo, tmp_path / "runs", epochs=1, teacher=str(path)))
    assert not (tmp_path / "runs" / "exp").exists()


def test_distillation_options_are_checked():
    from accelyolo.core.config import load_config

    with pytest.raises(ConfigError, match="'temperature' must be > 0"):
        load_config(temperature=0.0)
    with pytest.raises(ConfigError, match="'distill_weight' must be >= 0"):
        load_config(distill_weight=-1.0)


SCRIPT = """
import hashlib, json
import accelyolo
from accelerate import PartialState
from accelyolo.training.callbacks import Callback

def digest(module, params_only=False):
    h = hashlib.sha256()  # BatchNorm running stats differ per rank (each its own batches); parameters may not
    items = module.named_parameters() if params_only else module.state_dict().items()
    for k, v in sorted(items):
        h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

class Watch(Callback):
    def on_fit_start(self, trainer):
        self.before = digest(trainer.loss_fn.teacher)
        self.wrapped = type(trainer.loss_fn.teacher).__name__
        self.steps = 0
    def on_step_end(self, trainer, step):
        self.steps += 1
        self.names = list(step.losses)
    def on_epoch_end(self, trainer, row):
        unwrap = trainer.accelerator.unwrap_model
        self.after = digest(trainer.loss_fn.teacher)
        self.student = digest(unwrap(trainer.model), params_only=True)
        self.adapters = digest(unwrap(trainer.loss_fn.adapters), params_only=True)

watch = Watch()
result = accelyolo.fit(callbacks=[watch], **OPTIONS)
rank = PartialState().process_index
out = dict(rank=rank, before=watch.before, after=watch.after, student=watch.student, adapters=watch.adapters,
           wrapped=watch.wrapped, steps=watch.steps, names=watch.names, epochs=result.epochs_completed)
open(OUT.format(rank=rank), "w").write(json.dumps(out))
"""


def watch_two_ranks(opts, tmp_path):
    """Run SCRIPT's watched `fit(**opts)` under a 2-process launch; each rank's record."""
    script = tmp_path / "ddp_distill.py"
    out = str(tmp_path / "rank-{rank}.json")
    script.write_text(textwrap.dedent(SCRIPT).replace("OPTIONS", repr(opts)).replace("OUT", repr(out)))
    run(launch_args(2) + [str(script)])
    return [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_ddp_epoch_with_a_teacher(tiny_demo, tmp_path, teacher_path):
    """Two processes train one epoch with a teacher: each rank's teacher unchanged and not DDP-wrapped; the
    student and the feature adapters identical on both ranks (their gradients were synchronised)."""
    opts = tiny_train_options(
        tiny_demo, tmp_path, epochs=1, batch_size=4, nbs=8, teacher=str(teacher_path), distill_feat=True
    )
    ranks = watch_two_ranks(opts, tmp_path)
    for r in ranks:
        assert r["before"] == r["after"] and r["wrapped"] == "YOLO" and r["epochs"] == 1
        assert r["steps"] == 6 and r["names"][-3:] == ["distill_cls", "distill_box", "distill_feat"]
    assert ranks[0]["student"] == ranks[1]["student"]
    assert ranks[0]["adapters"] == ranks[1]["adapters"]


def test_an_anchor_based_student_distils_classes_only(tiny_demo, tmp_path):
    teacher = write_teacher(tmp_path / "v5.safetensors", name=TINY_ANCHOR_BASED)
    watch = TeacherWatch()
    opts = tiny_train_options(
        tiny_demo, tmp_path, epochs=1, model=TINY_ANCHOR_BASED, teacher=str(teacher), max_steps_per_epoch=2
    )
    fit(callbacks=[watch], **opts)
    assert list(watch.steps[0]) == ["box", "obj", "cls", "distill_cls"] and watch.steps[0]["distill_cls"] > 0
    assert all(torch.equal(watch.after[0][k], watch.before[k]) for k in watch.before)


@pytest.mark.parametrize(
    "student, teacher",
    [
        (TINY_ANCHOR_FREE, "yolo11t"),  # another anchor-free family, either way round
        ("yolo11t", "yolov8n"),  # ... and another size
        (TINY_ANCHOR_BASED, "yolov5n"),  # anchor-based: another size of the same family
    ],
)
def test_a_teacher_of_another_family_or_size_distils(tiny_demo, tmp_path, student, teacher):
    """Every accepted pairing: finite, non-zero distillation terms (the feature term through adapters where
    the families' necks differ in width) and a teacher left exactly as it was."""
    path = write_teacher(tmp_path / "teacher.safetensors", name=teacher)
    anchor_free = student != TINY_ANCHOR_BASED
    watch = TeacherWatch()
    opts = tiny_train_options(tiny_demo, tmp_path, epochs=1, model=student, teacher=str(path),
                              distill_feat=anchor_free, max_steps_per_epoch=2)  # fmt: skip
    fit(callbacks=[watch], **opts)
    terms = ["distill_cls", "distill_box", "distill_feat"] if anchor_free else ["distill_cls"]
    assert [k for k in watch.steps[0] if k.startswith("distill_")] == terms
    assert all(math.isfinite(step[k]) and step[k] > 0 for step in watch.steps for k in terms)
    assert all(torch.equal(watch.after[0][k], watch.before[k]) for k in watch.before)


@pytest.mark.parametrize(
    "student, teacher, extra, match",
    [
        (
            TINY_ANCHOR_BASED,
            TINY_ANCHOR_FREE,
            {},
            "anchor_free model \\(yolov8t\\), which does not pair with the "
            "anchor_based student yolov5t; a student of yolov5\\*",
        ),
        (
            "yolo11t",
            TINY_ANCHOR_BASED,
            {},
            "which does not pair with the yolo11 student yolo11t; .* a student of "
            "yolov8\\* or yolo11\\* takes a teacher of yolov8\\* or yolo11\\*",
        ),
        (
            TINY_ANCHOR_BASED,
            TINY_ANCHOR_BASED,
            {"anchors": [[10, 13, 16, 30], [30, 61, 62, 45], [116, 90, 156, 198]]},
            "anchors per cell 2 \\(the student's: 3\\)",
        ),
    ],
)
def test_a_teacher_that_does_not_pair_is_refused_with_the_pairings_that_work(
    tiny_demo, tmp_path, student, teacher, extra, match
):
    path = write_teacher(tmp_path / "teacher.safetensors", name=teacher, **extra)
    with pytest.raises(ConfigError, match=match):
        fit(**tiny_train_options(tiny_demo, tmp_path / "runs", epochs=1, model=student, teacher=str(path)))
    assert not (tmp_path / "runs" / "exp").exists()


def test_the_distillation_benchmark_prints_its_table(tiny_demo, capsys):
    """benchmarks/distill.py end to end at toy size: teachers first, the student alone and with each teacher,
    the table and the last line (no figure is asserted)."""
    from benchmarks.distill import main

    code = main([str(tiny_demo), "--teachers", "self", "other", "--student", TINY_ANCHOR_FREE, "--other", "yolo11t",
                 "--seeds", "1", "--epochs", "1", "--imgsz", "64", "--batch", "8", "--workers", "0",
                 "--close-mosaic", "0"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "teacher self (yolov8t)" in out and "teacher other (yolo11t)" in out
    rows = [line for line in out.splitlines() if line.startswith("| demo")]
    assert [row.split(" | ")[1] for row in rows] == ["self", "other"]
    assert out.strip().splitlines()[-1].startswith("distill_gain=")


def test_the_distillation_benchmark_keeps_each_training_and_runs_it_once(tiny_demo, tmp_path, monkeypatch, capsys):
    """With --out every training is recorded and not run again; seeds added by a later call pair with the
    student alone of the same seed, and --report prints the table of all of them (trainings faked here)."""
    import benchmarks.distill as bench

    trained = []

    def fake(args, data, truth, out, name, **options):
        trained.append(name)
        checkpoint = out / name / "last.safetensors"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_bytes(b"x")
        score = {"alone": 0.30, "self": 0.32}[name.split("-")[0]] if "seed" in name else 0.5
        return score + 0.01 * options.get("seed", 0), 60.0, checkpoint

    monkeypatch.setattr(bench, "train_and_score", fake)
    out = tmp_path / "bench"
    common = [str(tiny_demo), "--teachers", "self", "--out", str(out), "--seeds", "1"]
    assert bench.main(common) == 0
    assert trained == ["teacher-self", "alone-seed0", "self-seed0"]
    assert bench.main([*common, "--first-seed", "1"]) == 0  # the teacher is kept: only seed 1 trains
    assert trained[3:] == ["alone-seed1", "self-seed1"]
    capsys.readouterr()
    assert bench.main(["--report", str(out)]) == 0
    text = capsys.readouterr().out
    assert " | self | 0.5000 | 60 | 0,1 | 0.3050 [0.3000-0.3100] | 0.3250 [0.3200-0.3300] | +0.0200 " in text
    assert text.splitlines()[0].startswith("student yolov8n from scratch, 30 epochs at 320 px")  # the runs' budget
    assert text.strip().splitlines()[-1] == "distill_gain=0.0200"
    assert len(trained) == 5


# ------------------------------------------------------------------------------------ with segmentation


def test_a_distilled_multitask_model_trains_and_resumes_exactly(tiny_demo, tmp_path, teacher_path):
    """`teacher` + `segment`: the distillation objective wraps the multi-task one (one forward call for both
    tasks; the teacher sees the detection images and the feature term the student's detection features). The
    teacher stays frozen, every term is its own column, and a run stopped after epoch 1 resumes exactly."""
    data = tiny_demo.with_name("data-multitask.yaml")
    opts = tiny_train_options(
        data, tmp_path, epochs=2, segment=True, teacher=str(teacher_path), distill_feat=True, max_steps_per_epoch=3
    )
    seen = []

    class StopAfterFirst(TeacherWatch):
        def on_epoch_end(self, trainer, row):
            super().on_epoch_end(trainer, row)
            trainer.request_stop()

    class Which(TeacherWatch):
        def on_fit_start(self, trainer):
            super().on_fit_start(trainer)
            seen.append(type(trainer.experiment))

    straight = Which()
    whole = fit(callbacks=[straight], **{**opts, "name": "straight"})
    assert issubclass(seen[0], DistillExperiment) and seen[0].__name__ == "DistillMultiTaskExperiment"
    names = ["box", "cls", "dfl", "seg", "distill_cls", "distill_box", "distill_feat"]
    assert [list(s) for s in straight.steps] == [names] * 6
    assert all(straight.steps[0][k] > 0 for k in names[3:])
    for snap in straight.after:
        assert all(torch.equal(snap[k], straight.before[k]) for k in snap)
    with (whole.run_dir / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[-1]["metrics/mIoU"] and rows[-1]["train/distill_feat_loss"] and rows[-1]["train/seg_loss"]

    first = StopAfterFirst()
    stopped = fit(callbacks=[first], **{**opts, "name": "stopped"})
    second = TeacherWatch()
    resumed = fit(callbacks=[second], resume=str(stopped.last_checkpoint))
    assert resumed.epochs_completed == 2 and first.steps + second.steps == straight.steps
    a, b = load_checkpoint_bundle(whole.last_checkpoint), load_checkpoint_bundle(resumed.last_checkpoint)
    assert all(torch.equal(a.model_state[k], b.model_state[k]) for k in a.model_state)
    assert a.metadata["seg_names"] == b.metadata["seg_names"] and a.metadata["model"]["seg_classes"] == 5


@pytest.mark.slow
def test_ddp_epoch_of_a_distilled_multitask_model(tiny_demo, tmp_path, teacher_path):
    """Two processes, `teacher` + `segment`: the student (with its segmentation head) and the adapters end
    identical on both ranks, each rank's teacher unchanged."""
    data = tiny_demo.with_name("data-multitask.yaml")
    opts = tiny_train_options(
        data, tmp_path, epochs=1, batch_size=4, nbs=8, segment=True, teacher=str(teacher_path), distill_feat=True
    )
    ranks = watch_two_ranks(opts, tmp_path)
    for r in ranks:
        assert r["before"] == r["after"] and r["epochs"] == 1
        assert r["names"] == ["box", "cls", "dfl", "seg", "distill_cls", "distill_box", "distill_feat"]
    assert ranks[0]["student"] == ranks[1]["student"]
    assert ranks[0]["adapters"] == ranks[1]["adapters"]
